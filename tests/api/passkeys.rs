//! Passkeys end to end with a software authenticator (webauthn-authenticator-rs's
//! `SoftPasskey`), which builds and signs real attestations and assertions.

use serde_json::{json, Value};
use webauthn_authenticator_rs::softpasskey::SoftPasskey;
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_rs::prelude::{CreationChallengeResponse, RequestChallengeResponse, Url};

use crate::both_backends;
use crate::helpers::{code, email, Backend, TestApp};

both_backends!(passkeys_register_sign_in_and_refuse_replays);

/// The default relying party (`WEBAUTHN_RP_ORIGIN`), as a browser at `cargo run` would
/// report it.
const ORIGIN: &str = "http://localhost:8000";

fn origin() -> Url {
    Url::parse(ORIGIN).expect("origin")
}

pub(crate) type Authenticator = WebauthnAuthenticator<SoftPasskey>;

pub(crate) fn authenticator() -> Authenticator {
    // `true`: the soft token claims user verification, as a platform passkey does.
    WebauthnAuthenticator::new(SoftPasskey::new(true))
}

pub(crate) async fn register(
    app: &TestApp,
    token: &str,
    device: &mut Authenticator,
    name: &str,
) -> Value {
    let started = app
        .gql(
            "mutation { startPasskeyRegistration }",
            json!({}),
            Some(token),
        )
        .await;
    let options: CreationChallengeResponse =
        serde_json::from_value(started["data"]["startPasskeyRegistration"].clone())
            .unwrap_or_else(|e| panic!("creation options ({e}): {started}"));
    let credential = device
        .do_registration(origin(), options)
        .expect("the soft authenticator registers");
    let credential = serde_json::to_value(credential).expect("credential json");
    app.gql(
        "mutation($c: JSON!, $n: String) { finishPasskeyRegistration(credential: $c, name: $n) { id name createdAt lastUsedAt } }",
        json!({"c": credential, "n": name}),
        Some(token),
    )
    .await
}

async fn assertion(app: &TestApp, user: &str, device: &mut Authenticator, at: &str) -> Value {
    let started = app
        .gql(
            "mutation($e: String!) { startPasskeyLogin(email: $e) }",
            json!({"e": user}),
            None,
        )
        .await;
    let options: RequestChallengeResponse =
        serde_json::from_value(started["data"]["startPasskeyLogin"].clone())
            .unwrap_or_else(|e| panic!("request options ({e}): {started}"));
    let credential = device
        .do_authentication(Url::parse(at).expect("url"), options)
        .expect("the soft authenticator signs");
    serde_json::to_value(credential).expect("assertion json")
}

const FINISH_LOGIN: &str = "mutation($e: String!, $c: JSON!) { finishPasskeyLogin(email: $e, credential: $c) { accessToken user { email } } }";

async fn passkeys_register_sign_in_and_refuse_replays(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let user = email("passkey");
    let auth = app.register(&user).await;
    let mut laptop = authenticator();
    let mut phone = authenticator();

    let first = register(&app, &auth.access, &mut laptop, "laptop").await;
    assert_eq!(
        first["data"]["finishPasskeyRegistration"]["name"], "laptop",
        "{first}"
    );
    let second = register(&app, &auth.access, &mut phone, "phone").await;
    assert_eq!(
        second["data"]["finishPasskeyRegistration"]["name"], "phone",
        "{second}"
    );

    // A registration response is good for its one challenge: replaying it fails.
    let started = app
        .gql(
            "mutation { startPasskeyRegistration }",
            json!({}),
            Some(&auth.access),
        )
        .await;
    let options: CreationChallengeResponse =
        serde_json::from_value(started["data"]["startPasskeyRegistration"].clone())
            .expect("options");
    let mut spare = authenticator();
    let response =
        serde_json::to_value(spare.do_registration(origin(), options).expect("registers"))
            .expect("json");
    const FINISH: &str =
        "mutation($c: JSON!) { finishPasskeyRegistration(credential: $c) { name } }";
    let named = app
        .gql(FINISH, json!({"c": response}), Some(&auth.access))
        .await;
    assert_eq!(
        named["data"]["finishPasskeyRegistration"]["name"], "Passkey 3",
        "{named}"
    );
    let replayed = app
        .gql(FINISH, json!({"c": response}), Some(&auth.access))
        .await;
    assert_eq!(code(&replayed), "BAD_USER_INPUT", "{replayed}");
    assert_eq!(replayed["errors"][0]["extensions"]["field"], "credential");
    let junk = app
        .gql(FINISH, json!({"c": {"id": "x"}}), Some(&auth.access))
        .await;
    assert_eq!(code(&junk), "BAD_USER_INPUT", "{junk}");

    let list = app
        .gql("{ passkeys { id name } }", json!({}), Some(&auth.access))
        .await;
    let names: Vec<&str> = list["data"]["passkeys"]
        .as_array()
        .expect("passkeys")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(names, ["laptop", "phone", "Passkey 3"]);

    // Passwordless sign-in with the phone.
    let signed = assertion(&app, &user, &mut phone, ORIGIN).await;
    let session = app
        .gql(FINISH_LOGIN, json!({"e": user, "c": signed}), None)
        .await;
    let token = session["data"]["finishPasskeyLogin"]["accessToken"]
        .as_str()
        .unwrap_or_else(|| panic!("passkey login: {session}"))
        .to_owned();
    let me = app.gql("{ me { email } }", json!({}), Some(&token)).await;
    assert_eq!(me["data"]["me"]["email"], user.as_str());
    let used = app
        .gql("{ passkeys { name lastUsedAt } }", json!({}), Some(&token))
        .await;
    assert!(
        used["data"]["passkeys"][1]["lastUsedAt"].is_string(),
        "{used}"
    );
    assert!(
        used["data"]["passkeys"][0]["lastUsedAt"].is_null(),
        "{used}"
    );

    // Replaying the same assertion fails: its challenge is spent.
    let replayed = app
        .gql(FINISH_LOGIN, json!({"e": user, "c": signed}), None)
        .await;
    assert_eq!(code(&replayed), "UNAUTHENTICATED", "{replayed}");

    // An assertion made for another origin (a phishing site) is refused.
    let phished = assertion(&app, &user, &mut laptop, "http://localhost:9999").await;
    let refused = app
        .gql(FINISH_LOGIN, json!({"e": user, "c": phished}), None)
        .await;
    assert_eq!(code(&refused), "UNAUTHENTICATED", "{refused}");

    // Another account's e-mail with this user's assertion gets nowhere.
    let other = email("other");
    let other_auth = app.register(&other).await;
    // Asking for an account without passkeys, or without an account, answers options of
    // the same shape as a real account's: nothing to learn about who has one.
    const START: &str = "mutation($e: String!) { startPasskeyLogin(email: $e) }";
    let real = app.gql(START, json!({"e": user}), None).await;
    let shape = |body: &Value| {
        let options = &body["data"]["startPasskeyLogin"]["publicKey"];
        let mut keys: Vec<String> = options
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        keys.sort();
        (
            keys,
            options["allowCredentials"][0]["type"].clone(),
            options["rpId"].clone(),
        )
    };
    for probe in [other.clone(), email("nobody")] {
        let decoy = app.gql(START, json!({"e": probe}), None).await;
        assert_eq!(shape(&decoy), shape(&real), "{decoy} vs {real}");
        let again = app.gql(START, json!({"e": probe}), None).await;
        assert_eq!(
            decoy["data"]["startPasskeyLogin"]["publicKey"]["allowCredentials"],
            again["data"]["startPasskeyLogin"]["publicKey"]["allowCredentials"],
            "a decoy is stable, like a real account's keys"
        );
    }
    let forged = app
        .gql(FINISH_LOGIN, json!({"e": other, "c": signed}), None)
        .await;
    assert_eq!(code(&forged), "UNAUTHENTICATED", "{forged}");

    // Only the owner can remove a passkey.
    let laptop_id = first["data"]["finishPasskeyRegistration"]["id"].clone();
    const REMOVE: &str = "mutation($id: ID!) { removePasskey(id: $id) }";
    let stolen = app
        .gql(REMOVE, json!({"id": laptop_id}), Some(&other_auth.access))
        .await;
    assert_eq!(code(&stolen), "NOT_FOUND", "{stolen}");
    let removed = app
        .gql(REMOVE, json!({"id": laptop_id}), Some(&token))
        .await;
    assert_eq!(removed["data"]["removePasskey"], true, "{removed}");
    let after = app
        .gql("{ passkeys { name } }", json!({}), Some(&token))
        .await;
    assert_eq!(after["data"]["passkeys"].as_array().map(Vec::len), Some(2));

    // The removed laptop key can no longer sign in (its challenge lists only the rest).
    let started = app
        .gql(
            "mutation($e: String!) { startPasskeyLogin(email: $e) }",
            json!({"e": user}),
            None,
        )
        .await;
    let options: RequestChallengeResponse =
        serde_json::from_value(started["data"]["startPasskeyLogin"].clone()).expect("options");
    assert!(laptop.do_authentication(origin(), options).is_err());
}
