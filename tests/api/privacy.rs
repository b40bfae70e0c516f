//! Privacy attacked: the export holds the user's data and no secret; erasure needs the
//! password and a session, removes personal data, ends every credential, and keeps
//! financial and audit records under the account id.

use serde_json::{json, Value};

use crate::api_keys::{create_key, with_key};
use crate::both_backends;
use crate::helpers::{code, email, Auth, Backend, TestApp, PASSWORD};

const DELETE: &str = "mutation($p: String!) { deleteMyAccount(password: $p) }";

async fn security_actions(app: &TestApp, auth: &Auth) -> Vec<String> {
    let body = app
        .gql(
            "{ securityLog(first: 100) { edges { node { action subjectType details } } } }",
            json!({}),
            Some(&auth.access),
        )
        .await;
    body["data"]["securityLog"]["edges"]
        .as_array()
        .unwrap_or_else(|| panic!("securityLog: {body}"))
        .iter()
        .map(|e| e["node"]["action"].as_str().unwrap_or_default().to_owned())
        .collect()
}

both_backends!(export_holds_everything_but_secrets_and_is_audited);

async fn export_holds_everything_but_secrets_and_is_audited(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let address = email("export");
    let auth = app.register(&address).await;
    let (secret, key) = create_key(
        &app,
        &auth,
        json!({"label": "exported", "scopes": ["READ"], "allowedIps": ["192.0.2.0/24"]}),
    )
    .await;
    let alert = app
        .gql(
            "mutation { createPriceAlert(input: {market: \"BTC-USD\", condition: BELOW, price: \"12345\"}) { id } }",
            json!({}),
            Some(&auth.access),
        )
        .await;
    assert!(alert["errors"].is_null(), "{alert}");
    let body = app
        .gql("{ exportMyData }", json!({}), Some(&auth.access))
        .await;
    let data = &body["data"]["exportMyData"];
    assert_eq!(data["priceAlerts"][0]["price"], "12345", "{body}");
    assert_eq!(data["account"]["email"], address.as_str(), "{body}");
    assert_eq!(data["account"]["id"], auth.user_id.as_str());
    assert_eq!(data["sessions"].as_array().map(Vec::len), Some(1));
    assert_eq!(data["apiKeys"][0]["prefix"], key["prefix"]);
    assert_eq!(data["apiKeys"][0]["allowedIps"], json!(["192.0.2.0/24"]));
    for section in [
        "balances",
        "ledgerEntries",
        "orders",
        "fills",
        "passkeys",
        "withdrawalAddresses",
        "withdrawals",
        "priceAlerts",
        "notifications",
        "emails",
    ] {
        assert!(data[section].is_array(), "{section}");
    }
    let text = body.to_string();
    let secret_part = &secret[key["prefix"].as_str().unwrap_or_default().len() + 1..];
    assert!(
        !text.contains(secret_part),
        "the key's secret is never exported"
    );
    assert!(!text.contains("argon2"), "nor the password hash");

    // A key cannot export (it would be a way round its scopes).
    let (open_key, _) = create_key(&app, &auth, json!({"label": "any", "scopes": ["READ"]})).await;
    let (_, body) = with_key(&app, &open_key, "{ exportMyData }", json!({}), &[]).await;
    assert_eq!(code(&body), "FORBIDDEN");

    let actions = security_actions(&app, &auth).await;
    for expected in ["api_key.created", "data.exported"] {
        assert!(
            actions.iter().any(|a| a == expected),
            "{expected} in {actions:?}"
        );
    }
    let body = app
        .gql(
            "mutation($id: ID!) { revokeApiKey(id: $id) { id } }",
            json!({"id": key["id"]}),
            Some(&auth.access),
        )
        .await;
    assert!(body["errors"].is_null(), "{body}");
    let actions = security_actions(&app, &auth).await;
    assert!(
        actions.iter().any(|a| a == "api_key.revoked"),
        "{actions:?}"
    );
}

both_backends!(deleting_an_account_erases_personal_data_and_ends_every_credential);

async fn deleting_an_account_erases_personal_data_and_ends_every_credential(backend: Backend) {
    let Some((app, admin)) = TestApp::spawn_with_admin(backend).await else {
        return;
    };
    let address = email("erase");
    let auth = app.register(&address).await;
    let (secret, _) = create_key(&app, &auth, json!({"label": "k", "scopes": ["READ"]})).await;

    let body = app
        .gql(DELETE, json!({"p": "wrong password!"}), Some(&auth.access))
        .await;
    assert_eq!(code(&body), "BAD_USER_INPUT", "{body}");
    assert_eq!(body["errors"][0]["extensions"]["field"], "password");
    let (_, body) = with_key(&app, &secret, DELETE, json!({"p": PASSWORD}), &[]).await;
    assert_eq!(
        code(&body),
        "FORBIDDEN",
        "a key cannot delete the account: {body}"
    );
    let body = app
        .gql(DELETE, json!({"p": PASSWORD}), Some(&admin.access))
        .await;
    assert_eq!(
        code(&body),
        "CONFLICT",
        "the admin must give up the role first: {body}"
    );

    // Funds held: refused until they are gone.
    let deposit = "mutation($input: CreditDepositInput!) { creditDeposit(input: $input) { id } }";
    let body = app
        .gql(
            deposit,
            json!({"input": {"userId": auth.user_id, "asset": "USD", "amount": "10", "reference": "erase-1"}}),
            Some(&admin.access),
        )
        .await;
    assert!(body["errors"].is_null(), "{body}");
    let body = app
        .gql(DELETE, json!({"p": PASSWORD}), Some(&auth.access))
        .await;
    assert_eq!(code(&body), "CONFLICT", "{body}");

    // A second user with no funds is erased.
    let gone_address = email("gone");
    let gone = app.register(&gone_address).await;
    let login = app.login(&gone_address, PASSWORD).await;
    let second = Auth::from_payload(&login["data"]["login"]).expect("second session");
    let (gone_key, _) = create_key(&app, &gone, json!({"label": "k", "scopes": ["READ"]})).await;
    let alert = app
        .gql(
            "mutation { createPriceAlert(input: {market: \"BTC-USD\", condition: ABOVE, price: \"99999\"}) { id } }",
            json!({}),
            Some(&gone.access),
        )
        .await;
    assert!(alert["errors"].is_null(), "{alert}");
    let body = app
        .gql(DELETE, json!({"p": PASSWORD}), Some(&gone.access))
        .await;
    assert_eq!(body["data"]["deleteMyAccount"], true, "{body}");

    // Every credential is dead: both sessions' tokens, the refresh token, the key, the
    // password.
    for token in [&gone.access, &second.access] {
        let (status, _) = app
            .post(json!({"query": "{ me { id } }"}), Some(token))
            .await;
        assert_eq!(status, 401);
    }
    let refresh = app
        .gql(
            "mutation($t: String!) { refreshSession(refreshToken: $t) { accessToken } }",
            json!({"t": second.refresh}),
            None,
        )
        .await;
    assert_eq!(code(&refresh), "UNAUTHENTICATED", "{refresh}");
    let (status, _) = with_key(&app, &gone_key, "{ me { id } }", json!({}), &[]).await;
    assert_eq!(status, 401);
    let login = app.login(&gone_address, PASSWORD).await;
    assert_eq!(code(&login), "UNAUTHENTICATED", "{login}");
    // Rows that only describe the person are gone (alerts here), read straight from the
    // database since the account can no longer sign in.
    {
        use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
        let db = sea_orm::Database::connect(app.database_url.clone())
            .await
            .expect("db");
        let user_id = uuid::Uuid::parse_str(&gone.user_id).expect("uuid");
        let alerts = entity::price_alerts::Entity::find()
            .filter(entity::price_alerts::Column::UserId.eq(user_id))
            .count(&db)
            .await
            .expect("count");
        assert_eq!(alerts, 0, "the erased account's price alerts remain");
    }

    // The e-mail is free again: nothing links it to the erased account.
    let again = app.register(&gone_address).await;
    assert_ne!(again.user_id, gone.user_id);
    let export = app
        .gql("{ exportMyData }", json!({}), Some(&again.access))
        .await;
    assert_eq!(export["data"]["exportMyData"]["apiKeys"], json!([]));

    // The audit log keeps the erasure under the old account id, with no personal data.
    let log = app
        .gql(
            "query($id: String!) { auditLog(first: 50, filter: {subjectId: $id}) { edges { node { action actorId details } } } }",
            json!({"id": gone.user_id}),
            Some(&admin.access),
        )
        .await;
    let edges = log["data"]["auditLog"]["edges"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let deleted: Vec<&Value> = edges
        .iter()
        .filter(|e| e["node"]["action"] == "account.deleted")
        .collect();
    assert_eq!(deleted.len(), 1, "{log}");
    assert_eq!(deleted[0]["node"]["actorId"], gone.user_id.as_str());
    assert!(
        !log.to_string().contains(&gone_address),
        "no e-mail in the audit log"
    );
}
