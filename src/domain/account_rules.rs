//! Rules for account input: e-mail, password and display name.

/// The largest password accepted. Hashing and strength estimation are costly, so a
/// megabyte-long "password" must be refused before either runs.
pub const MAX_PASSWORD_LEN: usize = 256;
pub const MIN_PASSWORD_LEN: usize = 12;

/// Why an input was refused, phrased for the user.
#[derive(Debug, PartialEq, Eq)]
pub struct RuleViolation(pub String);

/// Normalises an e-mail address (trimmed, lower-case) and checks its shape.
///
/// Exchanges treat addresses case-insensitively, or two accounts could differ only by
/// case. The check is deliberately structural (RFC 5321 lengths, one `@`, a dotted
/// domain of letters, digits and hyphens); only a confirmation e-mail proves more.
pub fn normalize_email(raw: &str) -> Result<String, RuleViolation> {
    let email = raw.trim().to_lowercase();
    let bad = |why: &str| Err(RuleViolation(format!("not a valid e-mail address: {why}")));
    if email.is_empty() {
        return bad("empty");
    }
    if email.len() > 254 {
        return bad("longer than 254 characters");
    }
    let Some((local, domain)) = email.split_once('@') else {
        return bad("missing @");
    };
    if local.is_empty() || local.len() > 64 {
        return bad("the part before @ must be 1 to 64 characters");
    }
    let local_ok = local
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c))
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..");
    if !local_ok {
        return bad("unsupported characters before @");
    }
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2 {
        return bad("the domain needs a dot");
    }
    for label in &labels {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return bad("invalid domain");
        }
    }
    if labels
        .last()
        .is_some_and(|tld| tld.chars().all(|c| c.is_ascii_digit()))
    {
        return bad("invalid domain");
    }
    Ok(email)
}

/// Checks a new password: 12 to 256 characters and not a well-known or easily guessed
/// one (zxcvbn's dictionaries of leaked passwords, common words and patterns, with the
/// user's own e-mail and name as extra dictionary words).
pub fn check_password(password: &str, user_inputs: &[&str]) -> Result<(), RuleViolation> {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_LEN {
        return Err(RuleViolation(format!(
            "password must be at least {MIN_PASSWORD_LEN} characters long"
        )));
    }
    if password.len() > MAX_PASSWORD_LEN {
        return Err(RuleViolation(format!(
            "password must be at most {MAX_PASSWORD_LEN} bytes long"
        )));
    }
    let estimate = zxcvbn::zxcvbn(password, user_inputs);
    if (estimate.score() as u8) < 3 {
        return Err(RuleViolation(
            "password is too common or easy to guess; use a longer passphrase".to_owned(),
        ));
    }
    Ok(())
}

/// Trims a display name and checks its length and characters.
pub fn normalize_display_name(raw: &str) -> Result<String, RuleViolation> {
    let name = raw.trim();
    let len = name.chars().count();
    if len == 0 || len > 64 {
        return Err(RuleViolation(
            "display name must be 1 to 64 characters".to_owned(),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(RuleViolation(
            "display name must not contain control characters".to_owned(),
        ));
    }
    Ok(name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalised() {
        assert_eq!(
            normalize_email("  Alice.Smith+x@Example.COM ").as_deref(),
            Ok("alice.smith+x@example.com")
        );
        assert_eq!(normalize_email("a@b.co").as_deref(), Ok("a@b.co"));
    }

    #[test]
    fn malformed_emails_are_refused() {
        for bad in [
            "",
            "plain",
            "@example.com",
            "a@",
            "a@b",
            "a@@b.com",
            "a b@c.com",
            "a@b..com",
            "a@-b.com",
            ".a@b.com",
            "a..b@c.com",
            "a@1.2.3.4",
            "a@b.com\u{0}",
            &format!("{}@b.com", "x".repeat(65)),
            &format!("a@{}.com", "x".repeat(260)),
        ] {
            assert!(normalize_email(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn weak_and_short_passwords_are_refused() {
        for weak in [
            "short",
            "password1234",
            "123456789012",
            "qwertyuiopasdf",
            "aaaaaaaaaaaaaaaa",
            "iloveyou12345",
        ] {
            assert!(check_password(weak, &[]).is_err(), "accepted {weak:?}");
        }
        let long = "x".repeat(MAX_PASSWORD_LEN + 1);
        assert!(check_password(&long, &[]).is_err());
    }

    #[test]
    fn passwords_built_from_the_users_own_details_are_refused() {
        assert!(check_password("alicesmith2024!", &["alicesmith2024", "Alice"]).is_err());
    }

    #[test]
    fn strong_passphrases_pass() {
        assert!(check_password("correct horse battery staple", &[]).is_ok());
        assert!(check_password("Tr4ding-Gr4ph-Vault#91", &[]).is_ok());
    }

    #[test]
    fn display_names_are_trimmed_and_bounded() {
        assert_eq!(normalize_display_name("  Ada ").as_deref(), Ok("Ada"));
        assert!(normalize_display_name("   ").is_err());
        assert!(normalize_display_name(&"x".repeat(65)).is_err());
        assert!(normalize_display_name("a\u{7}b").is_err());
    }
}
