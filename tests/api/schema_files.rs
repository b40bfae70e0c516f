//! The checked-in schema and the playground's example operations stay true to the code.

use std::path::Path;
use std::sync::Arc;

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextExecute};
use async_graphql::Response;

/// `schema.graphql` must equal what the code generates. Regenerate it with
/// `cargo run -- schema > schema.graphql`.
#[test]
fn schema_file_is_up_to_date() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schema.graphql");
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    let generated = tradegraph::graphql::sdl();
    assert!(
        checked_in == generated,
        "schema.graphql is stale: run `cargo run -- schema > schema.graphql`"
    );
}

#[test]
fn the_schema_binary_prints_the_same_sdl() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tradegraph"))
        .arg("schema")
        .env_clear()
        .output()
        .expect("binary runs");
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        tradegraph::graphql::sdl()
    );
}

/// Stops a request after validation, so documents can be checked against the schema
/// without running resolvers.
struct ValidateOnly;

impl ExtensionFactory for ValidateOnly {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(ValidateOnly)
    }
}

#[async_trait::async_trait]
impl Extension for ValidateOnly {
    async fn execute(
        &self,
        _: &ExtensionContext<'_>,
        _: Option<&str>,
        _: NextExecute<'_>,
    ) -> Response {
        Response::new(async_graphql::Value::Null)
    }
}

/// Every operation in `playground/*.graphql` is valid against the schema, with the
/// variables of its `.variables.json` file, and within the default query limits.
#[tokio::test]
async fn playground_examples_are_valid() {
    let schema = tradegraph::graphql::schema()
        .extension(tradegraph::graphql::guardrails::GuardrailsFactory::new(
            tradegraph::Config::from_vars(Default::default())
                .expect("defaults")
                .limits,
        ))
        .extension(ValidateOnly)
        .finish();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("playground");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("playground directory") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("graphql") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("readable");
        let variables_path = path.with_extension("variables.json");
        let variables: serde_json::Value = std::fs::read_to_string(&variables_path)
            .ok()
            .map(|t| serde_json::from_str(&t).expect("variables file is JSON"))
            .unwrap_or_else(|| serde_json::json!({}));
        let document = async_graphql::parser::parse_query(&text)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for (name, _) in document.operations.iter() {
            let name = name.map(|n| n.to_string());
            let mut request = async_graphql::Request::new(text.clone())
                .variables(async_graphql::Variables::from_json(variables.clone()));
            if let Some(name) = &name {
                request = request.operation_name(name.clone());
            }
            let response = schema.execute(request).await;
            assert!(
                response.errors.is_empty(),
                "{} operation {name:?}: {:?}",
                path.display(),
                response.errors
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 5,
        "expected the example operations, found {checked}"
    );
}

/// Every type, field, argument and enum value of our own carries a description, so the
/// playground's docs explain the whole API. Types generated for connections and the
/// built-in scalars are the library's and exempt.
#[test]
fn every_field_is_documented() {
    use async_graphql::parser::types::{TypeKind, TypeSystemDefinition};
    let sdl = tradegraph::graphql::sdl();
    let document = async_graphql::parser::parse_schema(&sdl).expect("SDL parses");
    let mut missing = Vec::new();
    for definition in &document.definitions {
        let TypeSystemDefinition::Type(ty) = definition else {
            continue;
        };
        let ty = &ty.node;
        let name = ty.name.node.as_str();
        let generated =
            name.ends_with("Connection") || name.ends_with("Edge") || name == "PageInfo";
        if generated || ["Boolean", "String", "Int", "Float", "ID"].contains(&name) {
            continue;
        }
        if ty.description.is_none() {
            missing.push(name.to_owned());
        }
        match &ty.kind {
            TypeKind::Object(object) => {
                for field in &object.fields {
                    let field = &field.node;
                    if field.description.is_none() {
                        missing.push(format!("{name}.{}", field.name.node));
                    }
                }
            }
            TypeKind::InputObject(input) => {
                for field in &input.fields {
                    if field.node.description.is_none() {
                        missing.push(format!("{name}.{}", field.node.name.node));
                    }
                }
            }
            TypeKind::Enum(values) => {
                for value in &values.values {
                    if value.node.description.is_none() {
                        missing.push(format!("{name}.{}", value.node.value.node));
                    }
                }
            }
            _ => {}
        }
    }
    assert!(missing.is_empty(), "undocumented: {missing:?}");
}
