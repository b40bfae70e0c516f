use std::fmt;
use std::str::FromStr;

/// A role grants access beyond what every signed-in user has.
///
/// `User` is implied for everyone and never stored; the others are kept in the
/// `users.roles` column as a comma-separated list so that authenticating a request needs
/// a single row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    User,
    Advisor,
    ComplianceOfficer,
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [
        Role::User,
        Role::Advisor,
        Role::ComplianceOfficer,
        Role::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "USER",
            Role::Advisor => "ADVISOR",
            Role::ComplianceOfficer => "COMPLIANCE_OFFICER",
            Role::Admin => "ADMIN",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, PartialEq, Eq)]
pub struct UnknownRole(pub String);

impl fmt::Display for UnknownRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown role `{}`", self.0)
    }
}

impl std::error::Error for UnknownRole {}

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == s)
            .ok_or_else(|| UnknownRole(s.to_owned()))
    }
}

/// The roles stored for a user, always including the implied `USER`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct RoleSet(Vec<Role>);

impl RoleSet {
    /// Parses the stored column. Unknown names are skipped rather than failing the
    /// request: a role removed from the code must not lock its holders out.
    pub fn parse(column: &str) -> Self {
        let mut roles: Vec<Role> = column
            .split(',')
            .filter_map(|name| name.trim().parse().ok())
            .filter(|role| *role != Role::User)
            .collect();
        roles.sort();
        roles.dedup();
        RoleSet(roles)
    }

    pub fn contains(&self, role: Role) -> bool {
        role == Role::User || self.0.contains(&role)
    }

    /// Every role held, `USER` first.
    pub fn to_vec(&self) -> Vec<Role> {
        std::iter::once(Role::User)
            .chain(self.0.iter().copied())
            .collect()
    }

    pub fn with(&self, role: Role) -> Self {
        let mut roles = self.0.clone();
        if role != Role::User && !roles.contains(&role) {
            roles.push(role);
            roles.sort();
        }
        RoleSet(roles)
    }

    pub fn without(&self, role: Role) -> Self {
        RoleSet(self.0.iter().copied().filter(|r| *r != role).collect())
    }

    /// The form stored in `users.roles`.
    pub fn to_column(&self) -> String {
        self.0
            .iter()
            .map(|role| role.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_skips_unknown_and_implied_roles_and_sorts() {
        let set = RoleSet::parse("ADMIN, NOPE,USER,ADVISOR,ADMIN");
        assert_eq!(set.to_column(), "ADVISOR,ADMIN");
        assert_eq!(set.to_vec(), vec![Role::User, Role::Advisor, Role::Admin]);
    }

    #[test]
    fn user_is_always_held_and_never_stored() {
        let set = RoleSet::parse("");
        assert!(set.contains(Role::User));
        assert!(!set.contains(Role::Admin));
        assert_eq!(set.with(Role::User).to_column(), "");
        assert_eq!(set.with(Role::Admin).without(Role::Admin), set);
    }

    #[test]
    fn names_round_trip() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        assert!("admin".parse::<Role>().is_err());
    }
}
