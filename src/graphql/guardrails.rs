//! The request guardrails every operation passes through, over HTTP and WebSocket alike:
//! limits on aliases, root fields, depth and complexity; the `cost` reported in each
//! response; error codes for every error; and panics turned into `INTERNAL`.

use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextParseQuery, NextRequest, NextSubscribe,
    NextValidation,
};
use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};
use async_graphql::{Response, ServerError, ServerResult, ValidationResult, Value, Variables};
use futures_util::stream::BoxStream;
use futures_util::{FutureExt, StreamExt};

use crate::config::QueryLimits;
use crate::error::{shape_server_error, ApiError};

/// Creates one [`Guardrails`] per operation.
pub struct GuardrailsFactory {
    limits: Arc<QueryLimits>,
}

impl GuardrailsFactory {
    pub fn new(limits: QueryLimits) -> Self {
        GuardrailsFactory {
            limits: Arc::new(limits),
        }
    }
}

impl ExtensionFactory for GuardrailsFactory {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(Guardrails {
            limits: self.limits.clone(),
            cost: Mutex::new(None),
            introspection_only: Mutex::new(false),
        })
    }
}

struct Guardrails {
    limits: Arc<QueryLimits>,
    /// (complexity, depth) once validation has measured them.
    cost: Mutex<Option<(usize, usize)>>,
    /// Whether every root field is introspection (`__schema`, `__type`, `__typename`).
    introspection_only: Mutex<bool>,
}

/// The depth allowed to introspection-only operations. Standard introspection queries
/// (GraphiQL's, codegen tools') unwrap `ofType` up to about 15 levels, which a
/// sensible limit for data queries would refuse; introspection is answered from the
/// schema in memory, so a fixed, larger cap is safe.
const INTROSPECTION_MAX_DEPTH: usize = 24;

fn too_complex(message: String) -> ServerError {
    ApiError::QueryTooComplex(message).into_server_error()
}

#[async_trait::async_trait]
impl Extension for Guardrails {
    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        let mut response = match AssertUnwindSafe(next.run(ctx)).catch_unwind().await {
            Ok(response) => response,
            Err(panic) => {
                tracing::error!(panic = panic_message(&panic), "resolver panicked");
                Response::from_errors(vec![
                    ApiError::internal(anyhow::anyhow!("panic")).into_server_error()
                ])
            }
        };
        for error in &mut response.errors {
            shape_server_error(error);
        }
        let cost = *self.cost.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((complexity, depth)) = cost {
            let mut map = async_graphql::indexmap::IndexMap::new();
            map.insert(
                async_graphql::Name::new("complexity"),
                Value::from(complexity),
            );
            map.insert(async_graphql::Name::new("depth"), Value::from(depth));
            response
                .extensions
                .insert("cost".to_owned(), Value::Object(map));
        }
        response
    }

    fn subscribe<'s>(
        &self,
        ctx: &ExtensionContext<'_>,
        stream: BoxStream<'s, Response>,
        next: NextSubscribe<'_>,
    ) -> BoxStream<'s, Response> {
        let stream =
            AssertUnwindSafe(next.run(ctx, stream))
                .catch_unwind()
                .map(|item| match item {
                    Ok(mut response) => {
                        for error in &mut response.errors {
                            shape_server_error(error);
                        }
                        response
                    }
                    Err(panic) => {
                        tracing::error!(panic = panic_message(&panic), "subscription panicked");
                        Response::from_errors(vec![
                            ApiError::internal(anyhow::anyhow!("panic")).into_server_error()
                        ])
                    }
                });
        // `catch_unwind` ends the stream after a panic: a panicked resolver cannot go on.
        stream.boxed()
    }

    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let document = next.run(ctx, query, variables).await?;
        let shape = measure(&document);
        *self
            .introspection_only
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = shape.introspection_only;
        if shape.aliases > self.limits.max_aliases {
            return Err(too_complex(format!(
                "the query uses {} aliases; the limit is {}",
                shape.aliases, self.limits.max_aliases
            )));
        }
        if shape.root_fields > self.limits.max_root_fields {
            return Err(too_complex(format!(
                "the query selects {} root fields; the limit is {}",
                shape.root_fields, self.limits.max_root_fields
            )));
        }
        Ok(document)
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        let result = next.run(ctx).await?;
        *self.cost.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((result.complexity, result.depth));
        let introspection = *self
            .introspection_only
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let max_depth = if introspection {
            self.limits.max_depth.max(INTROSPECTION_MAX_DEPTH)
        } else {
            self.limits.max_depth
        };
        if result.depth > max_depth {
            return Err(vec![too_complex(format!(
                "the query is nested {} levels deep; the limit is {max_depth}",
                result.depth
            ))]);
        }
        if result.complexity > self.limits.max_complexity {
            return Err(vec![too_complex(format!(
                "the query's complexity is {}; the limit is {}",
                result.complexity, self.limits.max_complexity
            ))]);
        }
        Ok(result)
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("non-string panic")
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Shape {
    aliases: usize,
    root_fields: usize,
    introspection_only: bool,
}

/// Counts aliases across the whole document and the widest operation's root fields
/// (fragments at the root expanded). Iterative, so a deeply nested document cannot
/// exhaust the stack here.
fn measure(document: &ExecutableDocument) -> Shape {
    let mut sets: Vec<&SelectionSet> = document
        .operations
        .iter()
        .map(|(_, op)| &op.node.selection_set.node)
        .chain(
            document
                .fragments
                .values()
                .map(|f| &f.node.selection_set.node),
        )
        .collect();
    let mut aliases = 0;
    while let Some(set) = sets.pop() {
        for item in &set.items {
            match &item.node {
                Selection::Field(field) => {
                    aliases += usize::from(field.node.alias.is_some());
                    sets.push(&field.node.selection_set.node);
                }
                Selection::InlineFragment(inline) => sets.push(&inline.node.selection_set.node),
                Selection::FragmentSpread(_) => {}
            }
        }
    }
    let root_fields = document
        .operations
        .iter()
        .map(|(_, op)| count_root_fields(document, &op.node.selection_set.node))
        .max()
        .unwrap_or(0);
    let introspection_only = document.operations.iter().all(|(_, op)| {
        op.node
            .selection_set
            .node
            .items
            .iter()
            .all(|item| match &item.node {
                Selection::Field(field) => field.node.name.node.starts_with("__"),
                _ => false,
            })
    });
    Shape {
        aliases,
        root_fields,
        introspection_only,
    }
}

fn count_root_fields(document: &ExecutableDocument, root: &SelectionSet) -> usize {
    let mut seen_fragments = HashSet::new();
    let mut pending = vec![root];
    let mut count = 0;
    while let Some(set) = pending.pop() {
        for item in &set.items {
            match &item.node {
                Selection::Field(_) => count += 1,
                Selection::InlineFragment(inline) => pending.push(&inline.node.selection_set.node),
                Selection::FragmentSpread(spread) => {
                    let name = &spread.node.fragment_name.node;
                    if seen_fragments.insert(name.clone()) {
                        if let Some(fragment) = document.fragments.get(name) {
                            pending.push(&fragment.node.selection_set.node);
                        }
                    }
                }
            }
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(query: &str) -> Shape {
        measure(&async_graphql::parser::parse_query(query).expect("parses"))
    }

    #[test]
    fn counts_aliases_everywhere() {
        assert_eq!(shape("{ a: me { b: id } c: me { id } }").aliases, 3);
        assert_eq!(
            shape("query { ...F } fragment F on Query { x: me { id } }").aliases,
            1
        );
    }

    #[test]
    fn recognises_introspection_only_operations() {
        assert!(shape("{ __schema { types { name } } __typename }").introspection_only);
        assert!(!shape("{ __schema { types { name } } me { id } }").introspection_only);
        assert!(!shape("{ ...F } fragment F on Query { __typename }").introspection_only);
    }

    #[test]
    fn counts_root_fields_through_fragments() {
        let s = shape(
            "query { me { id } ...F ... on Query { serverTime } } \
             fragment F on Query { a: serverTime b: serverTime }",
        );
        assert_eq!(s.root_fields, 4);
        assert_eq!(shape("{ me { id email displayName } }").root_fields, 1);
    }
}

#[cfg(test)]
mod panic_tests {
    use async_graphql::{EmptyMutation, EmptySubscription, Object, Schema};

    use super::*;

    struct Panicky;

    #[Object]
    impl Panicky {
        async fn boom(&self, n: i32) -> i32 {
            if n > 0 {
                panic!("secret detail from a resolver");
            }
            n
        }

        async fn fine(&self) -> i32 {
            1
        }
    }

    fn limits() -> QueryLimits {
        crate::config::Config::from_vars(Default::default())
            .expect("defaults")
            .limits
    }

    #[tokio::test]
    async fn a_panicking_resolver_becomes_internal_and_the_schema_keeps_serving() {
        let schema = Schema::build(Panicky, EmptyMutation, EmptySubscription)
            .extension(GuardrailsFactory::new(limits()))
            .finish();
        let response = schema.execute("{ boom(n: 1) }").await;
        assert_eq!(response.errors.len(), 1);
        let error = &response.errors[0];
        assert_eq!(error.message, "internal error");
        let code = error
            .extensions
            .as_ref()
            .and_then(|e| e.get("code").cloned());
        assert_eq!(code, Some(Value::from("INTERNAL")));
        let json = serde_json::to_string(&response).expect("json");
        assert!(!json.contains("secret detail"), "{json}");
        let response = schema.execute("{ fine }").await;
        assert!(response.errors.is_empty());
    }
}
