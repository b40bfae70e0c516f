use std::fmt;
use std::str::FromStr;

/// What an API key may do. Each GraphQL field a key may call names the scope it needs;
/// fields that name none (managing keys, second factors, sessions, passwords, the
/// account itself) are closed to every key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ApiScope {
    /// Queries and subscriptions.
    Read,
    /// Order mutations.
    Trade,
    /// Withdrawal mutations.
    Withdraw,
}

impl ApiScope {
    pub const ALL: [ApiScope; 3] = [ApiScope::Read, ApiScope::Trade, ApiScope::Withdraw];

    pub fn as_str(self) -> &'static str {
        match self {
            ApiScope::Read => "READ",
            ApiScope::Trade => "TRADE",
            ApiScope::Withdraw => "WITHDRAW",
        }
    }
}

impl fmt::Display for ApiScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ApiScope {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ApiScope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s)
            .ok_or_else(|| format!("unknown API scope `{s}`"))
    }
}

/// The scopes stored for a key, sorted and without repeats.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ScopeSet(Vec<ApiScope>);

impl ScopeSet {
    /// Parses the stored column. Unknown names are dropped: a key never gains a scope
    /// from a value it does not understand.
    pub fn parse(column: &str) -> Self {
        Self::from_iter(column.split(',').filter_map(|s| s.trim().parse().ok()))
    }

    pub fn contains(&self, scope: ApiScope) -> bool {
        self.0.contains(&scope)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn to_vec(&self) -> Vec<ApiScope> {
        self.0.clone()
    }

    pub fn to_column(&self) -> String {
        self.0
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl FromIterator<ApiScope> for ScopeSet {
    fn from_iter<I: IntoIterator<Item = ApiScope>>(iter: I) -> Self {
        let mut scopes: Vec<ApiScope> = iter.into_iter().collect();
        scopes.sort();
        scopes.dedup();
        ScopeSet(scopes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_drops_unknown_names_and_repeats() {
        let set = ScopeSet::parse("TRADE, read,READ,ADMIN,TRADE");
        assert_eq!(set.to_column(), "READ,TRADE");
        assert!(!set.contains(ApiScope::Withdraw));
        assert!(ScopeSet::parse("").is_empty());
    }

    #[test]
    fn names_round_trip() {
        for scope in ApiScope::ALL {
            assert_eq!(scope.as_str().parse::<ApiScope>(), Ok(scope));
        }
    }
}
