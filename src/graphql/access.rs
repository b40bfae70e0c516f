//! What an API key may call, and the per-field rate limits (order placement, sign-in).
//!
//! # Marking a field for API keys
//!
//! Every root field (query, mutation, subscription) is closed to API keys unless it
//! carries the `@apiKey` directive, which also shows in `schema.graphql`:
//!
//! ```text
//! use super::access::api_key;
//! use super::api_keys::ApiScope;
//!
//! /// ...
//! #[graphql(directive = api_key::apply(Some(ApiScope::Withdraw)))]
//! async fn request_withdrawal(&self, ctx: &Context<'_>, ...) -> ... { ... }
//! ```
//!
//! `Some(ApiScope::Read)` for queries and subscriptions, `Some(ApiScope::Trade)` for
//! order mutations, `Some(ApiScope::Withdraw)` for withdrawal mutations, and `None` for
//! public fields any key may call (a key adds nothing to what an anonymous caller may
//! do there). Fields that manage API keys, second factors, passkeys, sessions, passwords
//! or the account are left unmarked, so no key can ever call them: deny by default.
//!
//! [`AccessGate`] checks the whole document before anything executes, so a request
//! mixing an allowed and a forbidden field runs neither. Nested fields are reached only
//! through a root field, so checking roots covers them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextParseQuery};
use async_graphql::parser::types::{ExecutableDocument, OperationType, Selection, SelectionSet};
use async_graphql::{ServerError, ServerResult, TypeDirective, Variables};
use entity::ApiScope as EntityScope;

use super::api_keys::ApiScope;
use super::context::RequestContext;
use crate::error::ApiError;
use crate::ratelimit::Bucket;
use crate::state::AppState;

/// Which API keys may call this field: those holding `scope`, or any key when it is
/// omitted. Fields without this directive are closed to API keys.
#[TypeDirective(location = "FieldDefinition", name = "apiKey")]
pub fn api_key(scope: Option<ApiScope>) {}

/// Root fields charged to the per-user order-placement limit.
const ORDER_FIELDS: &[&str] = &["placeOrder", "amendOrder"];
/// Root fields charged to the per-IP sign-in limit (names from API.md; a field not
/// in the schema simply never matches).
const LOGIN_FIELDS: &[&str] = &[
    "login",
    "startPasskeyLogin",
    "finishPasskeyLogin",
    "requestPasswordReset",
    "resetPassword",
];

/// What API keys may call at the root, read once from the schema's `@apiKey` marks.
#[derive(Debug, Default)]
pub struct KeyAccess {
    /// (operation type, field) → the scope needed, or `None` for any key.
    marks: HashMap<(OperationKind, String), Option<EntityScope>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OperationKind {
    Query,
    Mutation,
    Subscription,
}

impl From<OperationType> for OperationKind {
    fn from(ty: OperationType) -> Self {
        match ty {
            OperationType::Query => OperationKind::Query,
            OperationType::Mutation => OperationKind::Mutation,
            OperationType::Subscription => OperationKind::Subscription,
        }
    }
}

impl KeyAccess {
    /// Reads the `@apiKey` marks of the root types from the schema's SDL (built once at
    /// start; the SDL is what clients see, so the gate and the docs cannot disagree).
    pub fn from_sdl(sdl: &str) -> Self {
        use async_graphql::parser::types::{TypeKind, TypeSystemDefinition};
        let mut marks = HashMap::new();
        let Ok(document) = async_graphql::parser::parse_schema(sdl) else {
            return KeyAccess { marks };
        };
        for definition in &document.definitions {
            let TypeSystemDefinition::Type(ty) = definition else {
                continue;
            };
            let kind = match ty.node.name.node.as_str() {
                "Query" => OperationKind::Query,
                "Mutation" => OperationKind::Mutation,
                "Subscription" => OperationKind::Subscription,
                _ => continue,
            };
            let TypeKind::Object(object) = &ty.node.kind else {
                continue;
            };
            for field in &object.fields {
                let Some(mark) = field
                    .node
                    .directives
                    .iter()
                    .find(|d| d.node.name.node == "apiKey")
                else {
                    continue;
                };
                let scope = mark
                    .node
                    .get_argument("scope")
                    .map(|value| match &value.node {
                        async_graphql::Value::Enum(name) => name.as_str().parse().ok(),
                        _ => None,
                    });
                let scope = match scope {
                    None => None,
                    Some(Some(scope)) => Some(scope),
                    // An unknown scope name must not open the field to every key.
                    Some(None) => continue,
                };
                marks.insert((kind, field.node.name.node.to_string()), scope);
            }
        }
        KeyAccess { marks }
    }

    /// `Ok` when a key holding `scopes` may call `field`; otherwise why not.
    pub fn check(
        &self,
        kind: OperationKind,
        field: &str,
        scopes: &entity::ScopeSet,
    ) -> Result<(), ApiError> {
        if field.starts_with("__") {
            return Ok(());
        }
        match self.marks.get(&(kind, field.to_owned())) {
            None => Err(ApiError::Forbidden(format!(
                "`{field}` cannot be called with an API key; sign in with a session"
            ))),
            Some(Some(scope)) if !scopes.contains(*scope) => Err(ApiError::Forbidden(format!(
                "`{field}` needs an API key with the {scope} scope"
            ))),
            Some(_) => Ok(()),
        }
    }

    /// The root fields and the scope each needs, for documentation and tests.
    pub fn marks(&self) -> impl Iterator<Item = (OperationKind, &str, Option<EntityScope>)> {
        self.marks
            .iter()
            .map(|((kind, name), scope)| (*kind, name.as_str(), *scope))
    }
}

/// Creates one [`AccessGate`] per operation.
pub struct AccessGateFactory {
    access: Arc<KeyAccess>,
}

impl AccessGateFactory {
    pub fn new(access: KeyAccess) -> Self {
        AccessGateFactory {
            access: Arc::new(access),
        }
    }
}

impl ExtensionFactory for AccessGateFactory {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(AccessGate {
            access: self.access.clone(),
            charged: Mutex::new(false),
        })
    }
}

pub struct AccessGate {
    access: Arc<KeyAccess>,
    /// A document is parsed once per operation; charge its field limits once.
    charged: Mutex<bool>,
}

fn refuse(error: ApiError) -> ServerError {
    error.into_server_error()
}

#[async_trait::async_trait]
impl Extension for AccessGate {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let document = next.run(ctx, query, variables).await?;
        let request = ctx.data_opt::<RequestContext>();
        let viewer = request.and_then(|r| r.viewer.as_ref());
        let roots = root_fields(&document);
        if let Some(access) = viewer.and_then(|v| v.api_key.as_ref()) {
            for (kind, field) in &roots {
                self.access
                    .check(*kind, field, &access.scopes)
                    .map_err(refuse)?;
            }
        }
        let first_parse = {
            let mut charged = self.charged.lock().unwrap_or_else(|p| p.into_inner());
            !std::mem::replace(&mut *charged, true)
        };
        if let (Some(state), Some(request), true) =
            (ctx.data_opt::<AppState>(), request, first_parse)
        {
            charge_field_limits(state, request, &roots)
                .await
                .map_err(refuse)?;
        }
        Ok(document)
    }
}

/// Charges order placements to the user's order limit and sign-in attempts to the
/// client IP's sign-in limit, once per occurrence (aliases cannot multiply attempts
/// for free).
async fn charge_field_limits(
    state: &AppState,
    request: &RequestContext,
    roots: &[(OperationKind, String)],
) -> Result<(), ApiError> {
    let limits = &state.config.rate_limits;
    if !limits.enabled {
        return Ok(());
    }
    for (kind, field) in roots {
        if *kind != OperationKind::Mutation {
            continue;
        }
        let bucket = if ORDER_FIELDS.contains(&field.as_str()) {
            match &request.viewer {
                Some(viewer) => Bucket::new(format!("orders:{}", viewer.user_id()), limits.orders),
                None => continue,
            }
        } else if LOGIN_FIELDS.contains(&field.as_str()) {
            Bucket::new(format!("login:{}", request.client.ip), limits.login)
        } else {
            continue;
        };
        let decision = state
            .rate_limiter
            .check(std::slice::from_ref(&bucket))
            .await;
        if let Some(retry_after_secs) = decision.and_then(|d| d.retry_after_secs) {
            return Err(ApiError::RateLimited { retry_after_secs });
        }
    }
    Ok(())
}

/// Every root field of every operation in the document, fragments expanded. Every
/// operation is checked, not only the one that will run: simpler, and never lets a
/// forbidden field through.
pub fn root_fields(document: &ExecutableDocument) -> Vec<(OperationKind, String)> {
    let mut fields = Vec::new();
    for (_, operation) in document.operations.iter() {
        let kind = OperationKind::from(operation.node.ty);
        let mut seen_fragments = std::collections::HashSet::new();
        let mut pending: Vec<&SelectionSet> = vec![&operation.node.selection_set.node];
        while let Some(set) = pending.pop() {
            for item in &set.items {
                match &item.node {
                    Selection::Field(field) => {
                        fields.push((kind, field.node.name.node.to_string()));
                    }
                    Selection::InlineFragment(inline) => {
                        pending.push(&inline.node.selection_set.node)
                    }
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
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access() -> KeyAccess {
        KeyAccess::from_sdl(&crate::graphql::sdl())
    }

    #[test]
    fn root_fields_are_found_through_fragments_and_aliases() {
        let document = async_graphql::parser::parse_query(
            "mutation { a: placeOrder(input: {}) { id } ...F } \
             fragment F on Mutation { ... on Mutation { createApiKey(input: {}) { secret } } }",
        )
        .expect("parses");
        let mut names: Vec<String> = root_fields(&document).into_iter().map(|(_, n)| n).collect();
        names.sort();
        assert_eq!(names, ["createApiKey", "placeOrder"]);
    }

    #[test]
    fn keys_are_denied_by_default_and_scoped_where_marked() {
        let access = access();
        let read = entity::ScopeSet::from_iter([EntityScope::Read]);
        let all = entity::ScopeSet::from_iter(EntityScope::ALL);
        use OperationKind::*;
        assert!(access.check(Query, "balances", &read).is_ok());
        assert!(access.check(Query, "__schema", &read).is_ok());
        assert!(access.check(Mutation, "placeOrder", &read).is_err());
        assert!(access.check(Mutation, "placeOrder", &all).is_ok());
        for closed in [
            "createApiKey",
            "revokeApiKey",
            "changePassword",
            "revokeSession",
            "logout",
            "deleteMyAccount",
        ] {
            assert!(access.check(Mutation, closed, &all).is_err(), "{closed}");
        }
        for closed in ["apiKeys", "sessions", "exportMyData"] {
            assert!(access.check(Query, closed, &all).is_err(), "{closed}");
        }
        assert!(access.check(Query, "noSuchField", &all).is_err());
    }
}
