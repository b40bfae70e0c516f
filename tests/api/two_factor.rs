//! TOTP two-factor authentication, password reset by e-mail, and new-device e-mails,
//! each attacked the way an attacker would try.

use serde_json::{json, Value};
use tradegraph::domain::totp;

use crate::both_backends;
use crate::helpers::{code, email, Auth, Backend, TestApp, PASSWORD};
use crate::mail::FakeSmtp;

both_backends!(
    totp_codes_work_once_and_recovery_codes_once,
    guessing_totp_codes_is_throttled,
    password_reset_tokens_work_once_and_carry_the_anti_phishing_code,
    expired_reset_tokens_are_refused,
    a_login_from_a_new_device_is_emailed,
);

const LOGIN: &str = "mutation($input: LoginInput!) { login(input: $input) { accessToken refreshToken user { id email twoFactorEnabled } } }";

fn now() -> u64 {
    chrono::Utc::now().timestamp() as u64
}

/// A code for `offset` steps from now.
fn code_at(secret: &[u8], offset: i64) -> String {
    let step = (totp::step_at(now()) as i64 + offset) as u64;
    totp::code_for_step(secret, step, totp::DIGITS)
}

/// Six digits that no step within reach accepts now.
fn wrong_code(secret: &[u8]) -> String {
    let near: Vec<String> = (-3..=3).map(|o| code_at(secret, o)).collect();
    (0..1_000_000u32)
        .map(|n| format!("{n:06}"))
        .find(|c| !near.contains(c))
        .unwrap_or_default()
}

async fn login(
    app: &TestApp,
    user: &str,
    totp_code: Option<&str>,
    recovery: Option<&str>,
) -> Value {
    app.gql(
        LOGIN,
        json!({"input": {"email": user, "password": PASSWORD, "totpCode": totp_code, "recoveryCode": recovery}}),
        None,
    )
    .await
}

/// Registers a user and turns TOTP on; returns the secret, the recovery codes and the
/// code spent on confirming.
async fn with_totp(app: &TestApp, user: &str) -> (Auth, Vec<u8>, Vec<String>, String) {
    let auth = app.register(user).await;
    let setup = app
        .gql(
            "mutation { enableTotp { secret otpauthUri } }",
            json!({}),
            Some(&auth.access),
        )
        .await;
    let secret_text = setup["data"]["enableTotp"]["secret"]
        .as_str()
        .unwrap_or_else(|| panic!("enableTotp: {setup}"));
    let uri = setup["data"]["enableTotp"]["otpauthUri"]
        .as_str()
        .unwrap_or_default();
    assert!(
        uri.starts_with("otpauth://totp/tradegraph:")
            && uri.contains(&format!("secret={secret_text}")),
        "{uri}"
    );
    assert!(
        uri.contains("digits=6") && uri.contains("period=30") && uri.contains("algorithm=SHA1")
    );
    let secret = totp::base32_decode(secret_text).expect("base32 secret");
    assert_eq!(secret.len(), 20);

    let wrong = app
        .gql(
            "mutation($c: String!) { confirmTotp(code: $c) }",
            json!({"c": wrong_code(&secret)}),
            Some(&auth.access),
        )
        .await;
    assert_eq!(code(&wrong), "BAD_USER_INPUT", "{wrong}");
    let spent = code_at(&secret, 0);
    let confirmed = app
        .gql(
            "mutation($c: String!) { confirmTotp(code: $c) }",
            json!({"c": spent}),
            Some(&auth.access),
        )
        .await;
    let codes: Vec<String> = confirmed["data"]["confirmTotp"]
        .as_array()
        .unwrap_or_else(|| panic!("confirmTotp: {confirmed}"))
        .iter()
        .filter_map(|c| c.as_str().map(str::to_owned))
        .collect();
    assert_eq!(codes.len(), 10);
    (auth, secret, codes, spent)
}

async fn totp_codes_work_once_and_recovery_codes_once(backend: Backend) {
    // Enough attempts that this test's deliberate failures are not throttled.
    let Some(app) =
        TestApp::spawn_with(backend, &[("SECOND_FACTOR_FAILURES_PER_ACCOUNT", "50")]).await
    else {
        return;
    };
    let user = email("totp");
    let (auth, secret, recovery, spent) = with_totp(&app, &user).await;
    let me = app
        .gql("{ me { twoFactorEnabled } }", json!({}), Some(&auth.access))
        .await;
    assert_eq!(me["data"]["me"]["twoFactorEnabled"], true, "{me}");
    let again = app
        .gql(
            "mutation { enableTotp { secret } }",
            json!({}),
            Some(&auth.access),
        )
        .await;
    assert_eq!(code(&again), "CONFLICT", "{again}");

    // The password alone no longer signs in.
    let bare = login(&app, &user, None, None).await;
    assert_eq!(code(&bare), "TWO_FACTOR_REQUIRED", "{bare}");
    let wrong = login(&app, &user, Some(&wrong_code(&secret)), None).await;
    assert_eq!(code(&wrong), "TWO_FACTOR_REQUIRED", "{wrong}");

    // The code spent by confirmTotp cannot be replayed to sign in.
    let replayed = login(&app, &user, Some(&spent), None).await;
    assert_eq!(code(&replayed), "TWO_FACTOR_REQUIRED", "{replayed}");

    // The next step's code (within the ±1 window) works, once.
    let next = code_at(&secret, 1);
    let ok = login(&app, &user, Some(&next), None).await;
    assert_eq!(
        ok["data"]["login"]["user"]["twoFactorEnabled"], true,
        "{ok}"
    );
    let replayed = login(&app, &user, Some(&next), None).await;
    assert_eq!(code(&replayed), "TWO_FACTOR_REQUIRED", "{replayed}");
    // Older codes die with it: the step only moves forward.
    let older = login(&app, &user, Some(&code_at(&secret, -1)), None).await;
    assert_eq!(code(&older), "TWO_FACTOR_REQUIRED", "{older}");

    // A recovery code works once, in any case and spacing.
    let first = recovery[0].to_uppercase().replace('-', " ");
    let ok = login(&app, &user, None, Some(&first)).await;
    assert!(ok["data"]["login"]["accessToken"].is_string(), "{ok}");
    let reused = login(&app, &user, None, Some(&recovery[0])).await;
    assert_eq!(code(&reused), "TWO_FACTOR_REQUIRED", "{reused}");
    let invented = login(&app, &user, None, Some("aaaaa-bbbbb")).await;
    assert_eq!(code(&invented), "TWO_FACTOR_REQUIRED", "{invented}");

    // Disabling needs a valid second factor; a recovery code does.
    let refused = app
        .gql(
            "mutation($c: String!) { disableTotp(code: $c) }",
            json!({"c": wrong_code(&secret)}),
            Some(&auth.access),
        )
        .await;
    assert_eq!(code(&refused), "TWO_FACTOR_REQUIRED", "{refused}");
    let disabled = app
        .gql(
            "mutation($c: String!) { disableTotp(code: $c) }",
            json!({"c": recovery[1]}),
            Some(&auth.access),
        )
        .await;
    assert_eq!(disabled["data"]["disableTotp"], true, "{disabled}");
    let plain = login(&app, &user, None, None).await;
    assert_eq!(
        plain["data"]["login"]["user"]["twoFactorEnabled"], false,
        "{plain}"
    );

    // Each step is in the user's security log, logouts too.
    let out = app
        .gql("mutation { logout }", json!({}), Some(&auth.access))
        .await;
    assert_eq!(out["data"]["logout"], true, "{out}");
    let token = plain["data"]["login"]["accessToken"]
        .as_str()
        .unwrap_or_default();
    let actions = security_actions(&app, token).await;
    for expected in [
        "totp.enabled",
        "login",
        "login.failed",
        "totp.disabled",
        "logout",
    ] {
        assert!(
            actions.iter().any(|a| a == expected),
            "{expected} missing: {actions:?}"
        );
    }
}

/// The actions in the viewer's security log.
pub async fn security_actions(app: &TestApp, token: &str) -> Vec<String> {
    let log = app
        .gql(
            "{ securityLog(first: 200) { edges { node { action } } } }",
            json!({}),
            Some(token),
        )
        .await;
    log["data"]["securityLog"]["edges"]
        .as_array()
        .unwrap_or_else(|| panic!("securityLog: {log}"))
        .iter()
        .filter_map(|e| e["node"]["action"].as_str().map(str::to_owned))
        .collect()
}

async fn guessing_totp_codes_is_throttled(backend: Backend) {
    let Some(app) =
        TestApp::spawn_with(backend, &[("SECOND_FACTOR_FAILURES_PER_ACCOUNT", "3")]).await
    else {
        return;
    };
    let user = email("brute");
    let (_, secret, _, _) = with_totp(&app, &user).await;
    // confirmTotp's wrong code spent one attempt; two more are allowed.
    for _ in 0..2 {
        let guess = login(&app, &user, Some(&wrong_code(&secret)), None).await;
        assert_eq!(code(&guess), "TWO_FACTOR_REQUIRED", "{guess}");
    }
    let throttled = login(&app, &user, Some(&wrong_code(&secret)), None).await;
    assert_eq!(code(&throttled), "RATE_LIMITED", "{throttled}");
    assert!(
        throttled["errors"][0]["extensions"]["retryAfterSeconds"].as_u64() > Some(0),
        "{throttled}"
    );
    // Even the right code is refused while throttled: guessing cannot continue.
    let right = login(&app, &user, Some(&code_at(&secret, 1)), None).await;
    assert_eq!(code(&right), "RATE_LIMITED", "{right}");
    // Recovery codes share the throttle.
    let recovery = login(&app, &user, None, Some("aaaaa-bbbbb")).await;
    assert_eq!(code(&recovery), "RATE_LIMITED", "{recovery}");
}

async fn smtp_app(backend: Backend, extra: &[(&str, &str)]) -> Option<(TestApp, FakeSmtp)> {
    let smtp = FakeSmtp::start().await;
    let mut vars = vec![("SMTP_URL", smtp.url.as_str())];
    vars.extend_from_slice(extra);
    let app = TestApp::spawn_with(backend, &vars).await?;
    Some((app, smtp))
}

fn reset_token(mail: &str) -> String {
    let start = mail
        .find("tgp_")
        .unwrap_or_else(|| panic!("no token in {mail}"));
    mail[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .collect()
}

const NEW_PASSWORD: &str = "a brand new passphrase 77";

async fn password_reset_tokens_work_once_and_carry_the_anti_phishing_code(backend: Backend) {
    let Some((app, smtp)) = smtp_app(backend, &[]).await else {
        return;
    };
    let user = email("reset");
    let auth = app.register(&user).await;
    let set = app
        .gql(
            "mutation { setAntiPhishingCode(code: \"blue-heron-42\") { antiPhishingCode } }",
            json!({}),
            Some(&auth.access),
        )
        .await;
    assert_eq!(
        set["data"]["setAntiPhishingCode"]["antiPhishingCode"],
        "blue-heron-42"
    );

    const REQUEST: &str = "mutation($e: String!) { requestPasswordReset(email: $e) }";
    let stranger = email("nobody");
    let unknown = app.gql(REQUEST, json!({"e": stranger}), None).await;
    assert_eq!(unknown["data"]["requestPasswordReset"], true, "{unknown}");
    let known = app
        .gql(REQUEST, json!({"e": user.to_uppercase()}), None)
        .await;
    assert_eq!(
        known, unknown,
        "the answer must not tell whether the account exists"
    );

    let mail = smtp
        .wait_for(|m| m.contains("Reset your tradegraph password"))
        .await;
    assert!(mail.contains(&user), "{mail}");
    assert!(
        mail.contains("Your anti-phishing code: blue-heron-42"),
        "{mail}"
    );
    assert!(
        smtp.messages().iter().all(|m| !m.contains(&stranger)),
        "nothing is sent for an unknown address"
    );
    let token = reset_token(&mail);

    const RESET: &str =
        "mutation($t: String!, $p: String!) { resetPassword(token: $t, newPassword: $p) }";
    let weak = app
        .gql(RESET, json!({"t": token, "p": "short"}), None)
        .await;
    assert_eq!(code(&weak), "BAD_USER_INPUT", "{weak}");
    assert_eq!(weak["errors"][0]["extensions"]["field"], "newPassword");
    let forged = app
        .gql(RESET, json!({"t": "tgp_forged", "p": NEW_PASSWORD}), None)
        .await;
    assert_eq!(
        forged["errors"][0]["extensions"]["field"], "token",
        "{forged}"
    );

    let done = app
        .gql(RESET, json!({"t": token, "p": NEW_PASSWORD}), None)
        .await;
    assert_eq!(done["data"]["resetPassword"], true, "{done}");
    // Every session was signed out.
    let me = app
        .gql("{ me { id } }", json!({}), Some(&auth.access))
        .await;
    assert_eq!(code(&me), "UNAUTHENTICATED", "{me}");
    // The token works once.
    let again = app
        .gql(
            RESET,
            json!({"t": token, "p": "yet another passphrase 99"}),
            None,
        )
        .await;
    assert_eq!(code(&again), "BAD_USER_INPUT", "{again}");
    assert_eq!(again["errors"][0]["extensions"]["field"], "token");

    let old = app.login(&user, PASSWORD).await;
    assert_eq!(code(&old), "UNAUTHENTICATED", "{old}");
    let new = app.login(&user, NEW_PASSWORD).await;
    assert!(new["data"]["login"]["accessToken"].is_string(), "{new}");
    // The owner hears about the change, with the code again.
    let notice = smtp
        .wait_for(|m| m.contains("the password was reset"))
        .await;
    assert!(notice.contains("blue-heron-42"), "{notice}");
}

async fn expired_reset_tokens_are_refused(backend: Backend) {
    let Some((app, smtp)) = smtp_app(backend, &[("PASSWORD_RESET_TTL_SECS", "0")]).await else {
        return;
    };
    let user = email("expired");
    app.register(&user).await;
    app.gql(
        "mutation($e: String!) { requestPasswordReset(email: $e) }",
        json!({"e": user}),
        None,
    )
    .await;
    let mail = smtp.wait_for(|m| m.contains("tgp_")).await;
    // The relay worked without an anti-phishing code set, and says how to set one.
    assert!(mail.contains("Your anti-phishing code: (not set"), "{mail}");
    let expired = app
        .gql(
            "mutation($t: String!, $p: String!) { resetPassword(token: $t, newPassword: $p) }",
            json!({"t": reset_token(&mail), "p": NEW_PASSWORD}),
            None,
        )
        .await;
    assert_eq!(code(&expired), "BAD_USER_INPUT", "{expired}");
    let still = app.login(&user, PASSWORD).await;
    assert!(still["data"]["login"]["accessToken"].is_string(), "{still}");
}

async fn a_login_from_a_new_device_is_emailed(backend: Backend) {
    let Some((app, smtp)) = smtp_app(backend, &[]).await else {
        return;
    };
    let user = email("device");
    app.register(&user).await;
    // Same client as at registration: nothing to report.
    let same = app.login(&user, PASSWORD).await;
    assert!(same["data"]["login"]["accessToken"].is_string());
    let firefox = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0";
    let response = app
        .http
        .post(app.url("/graphql"))
        .header("content-type", "application/json")
        .header("user-agent", firefox)
        .json(
            &json!({"query": LOGIN, "variables": {"input": {"email": user, "password": PASSWORD}}}),
        )
        .send()
        .await
        .expect("login sent");
    let body: Value = response.json().await.expect("json");
    assert!(body["data"]["login"]["accessToken"].is_string(), "{body}");
    let mail = smtp.wait_for(|m| m.contains("New sign-in")).await;
    assert!(mail.contains("Firefox 133 on Linux"), "{mail}");
    let notices = smtp
        .messages()
        .iter()
        .filter(|m| m.contains("New sign-in"))
        .count();
    assert_eq!(notices, 1, "only the new device is reported");
    // ... and it is in the panel's notifications too.
    let token = body["data"]["login"]["accessToken"]
        .as_str()
        .unwrap_or_default();
    let notes = app
        .gql(
            "{ notifications(first: 10) { edges { node { kind title body } } } }",
            json!({}),
            Some(token),
        )
        .await;
    let security: Vec<&Value> = notes["data"]["notifications"]["edges"]
        .as_array()
        .unwrap_or_else(|| panic!("{notes}"))
        .iter()
        .filter(|e| e["node"]["kind"] == "SECURITY")
        .collect();
    assert_eq!(security.len(), 1, "{notes}");
    assert!(
        security[0]["node"]["body"]
            .as_str()
            .is_some_and(|b| b.contains("Firefox 133 on Linux")),
        "{notes}"
    );
}
