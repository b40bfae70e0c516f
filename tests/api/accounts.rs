//! Registration, login, sessions, refresh-token rotation, passwords and roles.

use chrono::Utc;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use crate::both_backends;
use crate::helpers::{code, email, Auth, Backend, TestApp, JWT_SECRET, PASSWORD};

const ME: &str =
    "{ me { id email displayName roles twoFactorEnabled kycTier antiPhishingCode createdAt } }";
const SESSIONS: &str = "{ sessions { id device ip current createdAt lastSeenAt } }";

both_backends!(
    register_login_and_read_me,
    register_refuses_bad_input,
    refresh_rotates_and_replay_revokes_the_session,
    sessions_are_listed_and_revoked,
    change_password_signs_out_other_sessions,
    failed_logins_are_throttled,
    roles_are_managed_by_admins_only,
    forged_tokens_are_refused,
);

async fn register_login_and_read_me(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let address = email("alice");
    let mixed_case = address.to_uppercase();
    let auth = app.register(&mixed_case).await;
    let me = app.gql(ME, json!({}), Some(&auth.access)).await;
    let user = &me["data"]["me"];
    assert_eq!(user["email"], address, "e-mail stored normalised: {me}");
    assert_eq!(user["roles"], json!(["USER"]));
    assert_eq!(user["kycTier"], "UNVERIFIED");
    assert_eq!(user["twoFactorEnabled"], false);
    assert_eq!(user["id"], auth.user_id);

    let login = app.login(&format!("  {address} "), PASSWORD).await;
    let second = Auth::from_payload(&login["data"]["login"]).expect("login works");
    assert_ne!(second.access, auth.access);
    assert_eq!(second.user_id, auth.user_id);

    let anonymous = app.gql(ME, json!({}), None).await;
    assert_eq!(code(&anonymous), "UNAUTHENTICATED");
    assert_eq!(anonymous["data"], json!(null));
}

async fn register_refuses_bad_input(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let register = |email: String, password: &str, name: &str| json!({"input": {"email": email, "password": password, "displayName": name}});
    let mutation = "mutation($input: RegisterInput!) { register(input: $input) { accessToken } }";
    let cases = [
        (
            register("not-an-email".into(), PASSWORD, "A"),
            "input.email",
        ),
        (
            register(email("weak"), "password1234", "A"),
            "input.password",
        ),
        (register(email("short"), "Sh0rt!", "A"), "input.password"),
        (
            register(email("name"), PASSWORD, "   "),
            "input.displayName",
        ),
    ];
    for (variables, field) in cases {
        let body = app.gql(mutation, variables, None).await;
        assert_eq!(code(&body), "BAD_USER_INPUT", "{body}");
        assert_eq!(body["errors"][0]["extensions"]["field"], field, "{body}");
    }
    let taken = email("taken");
    app.register(&taken).await;
    let body = app
        .gql(
            mutation,
            register(taken.to_uppercase(), PASSWORD, "Again"),
            None,
        )
        .await;
    assert_eq!(code(&body), "CONFLICT", "{body}");

    // A wrongly typed variable is a request error, named, and nothing is written.
    let body = app
        .gql(
            mutation,
            json!({"input": {"email": 5, "password": PASSWORD, "displayName": "x"}}),
            None,
        )
        .await;
    assert_eq!(code(&body), "BAD_USER_INPUT", "{body}");
}

async fn refresh_rotates_and_replay_revokes_the_session(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let auth = app.register(&email("rotate")).await;
    let refresh = "mutation($t: String!) { refreshSession(refreshToken: $t) { accessToken refreshToken user { id } } }";

    let body = app.gql(refresh, json!({"t": auth.refresh}), None).await;
    let rotated = Auth::from_payload(&body["data"]["refreshSession"]).expect("refresh works");
    assert_ne!(rotated.refresh, auth.refresh);
    assert_eq!(rotated.user_id, auth.user_id);
    assert!(app.gql(ME, json!({}), Some(&rotated.access)).await["data"]["me"].is_object());

    // Replaying the spent token revokes the whole session: the new tokens die too.
    let replay = app.gql(refresh, json!({"t": auth.refresh}), None).await;
    assert_eq!(code(&replay), "UNAUTHENTICATED", "{replay}");
    let (status, body) = app.post(json!({"query": ME}), Some(&rotated.access)).await;
    assert_eq!((status, code(&body)), (401, "UNAUTHENTICATED"), "{body}");
    let after = app.gql(refresh, json!({"t": rotated.refresh}), None).await;
    assert_eq!(code(&after), "UNAUTHENTICATED", "{after}");

    let garbage = app.gql(refresh, json!({"t": "tgr_nonsense"}), None).await;
    assert_eq!(code(&garbage), "UNAUTHENTICATED");
}

async fn sessions_are_listed_and_revoked(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let address = email("sessions");
    let first = app.register(&address).await;
    let login = app.login(&address, PASSWORD).await;
    let second = Auth::from_payload(&login["data"]["login"]).expect("login");

    let body = app.gql(SESSIONS, json!({}), Some(&second.access)).await;
    let sessions = body["data"]["sessions"]
        .as_array()
        .expect("sessions")
        .clone();
    assert_eq!(sessions.len(), 2, "{body}");
    let current: Vec<_> = sessions.iter().filter(|s| s["current"] == true).collect();
    assert_eq!(current.len(), 1);
    assert_eq!(sessions[0]["ip"], "127.0.0.1");
    let other_id = sessions
        .iter()
        .find(|s| s["current"] == false)
        .and_then(|s| s["id"].as_str())
        .expect("the first session")
        .to_owned();

    // Another user cannot see or revoke it.
    let stranger = app.register(&email("stranger")).await;
    let revoke = "mutation($id: ID!) { revokeSession(id: $id) }";
    let body = app
        .gql(revoke, json!({"id": other_id}), Some(&stranger.access))
        .await;
    assert_eq!(code(&body), "NOT_FOUND", "{body}");
    let body = app
        .gql(revoke, json!({"id": "not-a-uuid"}), Some(&stranger.access))
        .await;
    assert_eq!(code(&body), "NOT_FOUND", "{body}");

    // Its owner can, and its access token stops working at once.
    let body = app
        .gql(revoke, json!({"id": other_id}), Some(&second.access))
        .await;
    assert_eq!(body["data"]["revokeSession"], true, "{body}");
    let (status, _) = app.post(json!({"query": ME}), Some(&first.access)).await;
    assert_eq!(status, 401);
    let body = app
        .gql(revoke, json!({"id": other_id}), Some(&second.access))
        .await;
    assert_eq!(code(&body), "NOT_FOUND", "revoking twice: {body}");

    let body = app
        .gql("mutation { logout }", json!({}), Some(&second.access))
        .await;
    assert_eq!(body["data"]["logout"], true);
    let (status, _) = app.post(json!({"query": ME}), Some(&second.access)).await;
    assert_eq!(status, 401);
}

async fn change_password_signs_out_other_sessions(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let address = email("change");
    let first = app.register(&address).await;
    let second =
        Auth::from_payload(&app.login(&address, PASSWORD).await["data"]["login"]).expect("login");
    let change = "mutation($c: String!, $n: String!) { changePassword(currentPassword: $c, newPassword: $n) }";
    let new_password = "another quite long passphrase 9";

    let wrong = app
        .gql(
            change,
            json!({"c": "wrong password!!", "n": new_password}),
            Some(&first.access),
        )
        .await;
    assert_eq!(code(&wrong), "BAD_USER_INPUT");
    assert_eq!(wrong["errors"][0]["extensions"]["field"], "currentPassword");
    let weak = app
        .gql(
            change,
            json!({"c": PASSWORD, "n": "123456789012"}),
            Some(&first.access),
        )
        .await;
    assert_eq!(
        weak["errors"][0]["extensions"]["field"], "newPassword",
        "{weak}"
    );

    let ok = app
        .gql(
            change,
            json!({"c": PASSWORD, "n": new_password}),
            Some(&first.access),
        )
        .await;
    assert_eq!(ok["data"]["changePassword"], true, "{ok}");
    assert!(app.gql(ME, json!({}), Some(&first.access)).await["data"]["me"].is_object());
    let (status, _) = app.post(json!({"query": ME}), Some(&second.access)).await;
    assert_eq!(status, 401, "other sessions are revoked");
    assert_eq!(
        code(&app.login(&address, PASSWORD).await),
        "UNAUTHENTICATED"
    );
    assert!(app.login(&address, new_password).await["data"]["login"].is_object());
}

async fn failed_logins_are_throttled(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, &[("LOGIN_FAILURES_PER_ACCOUNT", "3")]).await
    else {
        return;
    };
    let address = email("throttle");
    app.register(&address).await;
    let unknown = app.login(&email("nobody"), PASSWORD).await;
    let wrong = app.login(&address, "wrong password here").await;
    assert_eq!(code(&unknown), "UNAUTHENTICATED");
    assert_eq!(
        unknown["errors"][0]["message"], wrong["errors"][0]["message"],
        "unknown e-mail and wrong password look the same"
    );
    for _ in 0..2 {
        assert_eq!(
            code(&app.login(&address, "wrong password here").await),
            "UNAUTHENTICATED"
        );
    }
    let query = "mutation($input: LoginInput!) { login(input: $input) { accessToken } }";
    let variables = json!({"input": {"email": address, "password": PASSWORD}});
    let response = app
        .http
        .post(app.url("/graphql"))
        .json(&json!({"query": query, "variables": variables}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status().as_u16(), 429);
    assert!(response.headers().get("retry-after").is_some());
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(
        code(&body),
        "RATE_LIMITED",
        "even the right password waits: {body}"
    );
    assert!(
        body["errors"][0]["extensions"]["retryAfterSeconds"]
            .as_u64()
            .unwrap_or(0)
            >= 1
    );
    // Other accounts are not affected.
    let other = email("unaffected");
    app.register(&other).await;
    assert!(app.login(&other, PASSWORD).await["data"]["login"].is_object());
}

async fn roles_are_managed_by_admins_only(backend: Backend) {
    let Some((app, admin)) = TestApp::spawn_with_admin(backend).await else {
        return;
    };
    let user = app.register(&email("advisor")).await;
    let grant = "mutation($u: ID!, $r: Role!) { grantRole(userId: $u, role: $r) { id roles } }";
    let revoke = "mutation($u: ID!, $r: Role!) { revokeRole(userId: $u, role: $r) { id roles } }";

    let denied = app
        .gql(
            grant,
            json!({"u": user.user_id, "r": "ADMIN"}),
            Some(&user.access),
        )
        .await;
    assert_eq!(code(&denied), "FORBIDDEN", "{denied}");
    let body = app
        .gql(
            grant,
            json!({"u": user.user_id, "r": "ADVISOR"}),
            Some(&admin.access),
        )
        .await;
    assert_eq!(
        body["data"]["grantRole"]["roles"],
        json!(["USER", "ADVISOR"]),
        "{body}"
    );
    let me = app.gql(ME, json!({}), Some(&user.access)).await;
    assert_eq!(me["data"]["me"]["roles"], json!(["USER", "ADVISOR"]));
    let body = app
        .gql(
            revoke,
            json!({"u": user.user_id, "r": "ADVISOR"}),
            Some(&admin.access),
        )
        .await;
    assert_eq!(body["data"]["revokeRole"]["roles"], json!(["USER"]));

    let body = app
        .gql(
            revoke,
            json!({"u": admin.user_id, "r": "ADMIN"}),
            Some(&admin.access),
        )
        .await;
    assert_eq!(code(&body), "CONFLICT", "the last admin stays: {body}");
    let body = app
        .gql(
            grant,
            json!({"u": uuid::Uuid::new_v4(), "r": "ADVISOR"}),
            Some(&admin.access),
        )
        .await;
    assert_eq!(code(&body), "NOT_FOUND");
    let body = app
        .gql(
            grant,
            json!({"u": user.user_id, "r": "USER"}),
            Some(&admin.access),
        )
        .await;
    assert_eq!(code(&body), "BAD_USER_INPUT");
}

async fn forged_tokens_are_refused(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let auth = app.register(&email("forged")).await;
    let claims = |exp: i64, sub: &str| {
        let payload: serde_json::Value = {
            use base64::Engine;
            let part = auth.access.split('.').nth(1).expect("payload");
            let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(part)
                .expect("b64");
            serde_json::from_slice(&bytes).expect("claims")
        };
        let mut claims = payload;
        claims["exp"] = json!(exp);
        claims["sub"] = json!(sub);
        claims
    };
    let sign = |claims: &serde_json::Value, secret: &[u8], alg: Algorithm| {
        jsonwebtoken::encode(&Header::new(alg), claims, &EncodingKey::from_secret(secret))
            .expect("sign")
    };
    let now = Utc::now().timestamp();
    let expired = sign(
        &claims(now - 120, &auth.user_id),
        JWT_SECRET.as_bytes(),
        Algorithm::HS256,
    );
    let wrong_key = sign(
        &claims(now + 600, &auth.user_id),
        b"some-other-secret-some-other-secret!",
        Algorithm::HS256,
    );
    let other_alg = sign(
        &claims(now + 600, &auth.user_id),
        JWT_SECRET.as_bytes(),
        Algorithm::HS512,
    );
    let other_user = sign(
        &claims(now + 600, &uuid::Uuid::new_v4().to_string()),
        JWT_SECRET.as_bytes(),
        Algorithm::HS256,
    );
    let alg_none = {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = b64.encode(r#"{"alg":"none","typ":"JWT"}"#);
        let body = b64.encode(claims(now + 600, &auth.user_id).to_string());
        format!("{header}.{body}.")
    };
    let mut tampered = auth.access.clone();
    tampered.replace_range(tampered.len() - 3.., "AAA");
    for (name, token) in [
        ("expired", expired),
        ("wrong key", wrong_key),
        ("HS512", other_alg),
        ("sub of another user", other_user),
        ("alg none", alg_none),
        ("tampered", tampered),
        ("garbage", "not.a.jwt".to_owned()),
    ] {
        let (status, body) = app.post(json!({"query": ME}), Some(&token)).await;
        assert_eq!(
            (status, code(&body)),
            (401, "UNAUTHENTICATED"),
            "{name}: {body}"
        );
    }
    let response = app
        .http
        .post(app.url("/graphql"))
        .header("authorization", "Basic dXNlcjpwYXNz")
        .json(&json!({"query": "{ serverTime }"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status().as_u16(), 401);
    // The server still serves the real token.
    assert!(app.gql(ME, json!({}), Some(&auth.access)).await["data"]["me"].is_object());
}

both_backends!(concurrent_registrations_and_logins_all_succeed);

/// Many writers at once: SQLite must queue them instead of failing with "database is
/// locked", and PostgreSQL must not lose any.
async fn concurrent_registrations_and_logins_all_succeed(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let app = std::sync::Arc::new(app);
    let mut tasks = Vec::new();
    for i in 0..24 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            let address = email(&format!("parallel{i}"));
            let auth = app.register(&address).await;
            let login = app.login(&address, PASSWORD).await;
            assert!(login["data"]["login"].is_object(), "{login}");
            let refresh =
                "mutation($t: String!) { refreshSession(refreshToken: $t) { accessToken } }";
            let body = app.gql(refresh, json!({"t": auth.refresh}), None).await;
            assert!(body["data"]["refreshSession"].is_object(), "{body}");
        }));
    }
    for task in tasks {
        task.await.expect("task finished");
    }
}

both_backends!(failed_logins_are_throttled_per_ip);

/// Guessing across many accounts from one address is throttled too.
async fn failed_logins_are_throttled_per_ip(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, &[("LOGIN_FAILURES_PER_IP", "3")]).await else {
        return;
    };
    for i in 0..3 {
        let body = app
            .login(&email(&format!("guess{i}")), "not the password!")
            .await;
        assert_eq!(code(&body), "UNAUTHENTICATED", "{body}");
    }
    let body = app.login(&email("guess-next"), "not the password!").await;
    assert_eq!(
        code(&body),
        "RATE_LIMITED",
        "a fourth account from the same IP: {body}"
    );
}
