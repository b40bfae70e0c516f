//! IP allowlists of API keys: addresses and CIDR ranges, IPv4 and IPv6.
//!
//! An IPv4 address that arrives as IPv4-mapped IPv6 (`::ffff:192.0.2.1`, as dual-stack
//! sockets report it) is compared as IPv4, so `192.0.2.0/24` matches it either way.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// Entries one key may hold.
pub const MAX_ENTRIES: usize = 32;

/// One allowlist entry: a network and its prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                mask_v4(u32::from(ip), self.prefix) == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                mask_v6(u128::from(ip), self.prefix) == u128::from(net)
            }
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl FromStr for Cidr {
    type Err = String;

    /// `192.0.2.7`, `192.0.2.0/24`, `2001:db8::/32`. Host bits below the prefix are
    /// refused (`192.0.2.7/24`): such an entry usually means the user meant something
    /// else, and silently widening it would allow more than they think.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s, None),
        };
        let network = canonical(
            addr.parse::<IpAddr>()
                .map_err(|_| format!("`{s}` is not an IP address or CIDR range"))?,
        );
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{s}`: the prefix length must be 0 to {max}"))?,
        };
        let exact = match network {
            IpAddr::V4(ip) => mask_v4(u32::from(ip), prefix) == u32::from(ip),
            IpAddr::V6(ip) => mask_v6(u128::from(ip), prefix) == u128::from(ip),
        };
        if !exact {
            return Err(format!(
                "`{s}` has bits set beyond its /{prefix} prefix; give the network address"
            ));
        }
        Ok(Cidr { network, prefix })
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

fn mask_v4(ip: u32, prefix: u8) -> u32 {
    ip & u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn mask_v6(ip: u128, prefix: u8) -> u128 {
    ip & u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

/// Parses a list given by a user, naming the first bad entry.
pub fn parse_list(entries: &[String]) -> Result<Vec<Cidr>, String> {
    if entries.len() > MAX_ENTRIES {
        return Err(format!("at most {MAX_ENTRIES} entries"));
    }
    entries.iter().map(|e| e.parse()).collect()
}

/// Whether `ip` may use a key restricted to `list`. An empty list allows any address;
/// an address that cannot be parsed is allowed by none.
pub fn allows(list: &[Cidr], ip: &str) -> bool {
    if list.is_empty() {
        return true;
    }
    match ip.parse::<IpAddr>() {
        Ok(ip) => list.iter().any(|cidr| cidr.contains(ip)),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn cidr(s: &str) -> Cidr {
        s.parse().expect("valid")
    }

    #[test]
    fn ipv4_ranges_and_single_addresses() {
        let list = vec![cidr("192.0.2.0/24"), cidr("198.51.100.7")];
        assert!(allows(&list, "192.0.2.1"));
        assert!(allows(&list, "192.0.2.255"));
        assert!(!allows(&list, "192.0.3.0"));
        assert!(allows(&list, "198.51.100.7"));
        assert!(!allows(&list, "198.51.100.8"));
        assert!(allows(&list, "::ffff:192.0.2.9"), "IPv4-mapped IPv6");
        assert!(!allows(&list, "unknown"));
        assert!(allows(&[], "203.0.113.1"), "no list, no restriction");
    }

    #[test]
    fn ipv6_ranges() {
        let list = vec![cidr("2001:db8::/32")];
        assert!(allows(&list, "2001:db8:ffff::1"));
        assert!(!allows(&list, "2001:db9::1"));
        assert!(!allows(&list, "192.0.2.1"));
        assert!(allows(&[cidr("::/0")], "2001:db8::1"));
        assert!(allows(&[cidr("0.0.0.0/0")], "8.8.8.8"));
    }

    #[test]
    fn bad_entries_are_refused() {
        for bad in [
            "192.0.2.7/24",
            "192.0.2.0/33",
            "2001:db8::/129",
            "example.com",
            "192.0.2.0/",
            "",
            "10.0.0.0/-1",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
        assert_eq!(cidr("10.0.0.0/8").to_string(), "10.0.0.0/8");
        assert_eq!(cidr("::ffff:10.0.0.1").to_string(), "10.0.0.1/32");
    }

    proptest! {
        #[test]
        fn a_v4_range_holds_exactly_the_addresses_sharing_its_prefix(
            net in any::<u32>(), prefix in 0u8..=32, probe in any::<u32>()
        ) {
            let network = mask_v4(net, prefix);
            let range = cidr(&format!("{}/{prefix}", Ipv4Addr::from(network)));
            let expected = prefix == 0 || (probe ^ network) >> (32 - u32::from(prefix)) == 0;
            prop_assert_eq!(range.contains(IpAddr::V4(Ipv4Addr::from(probe))), expected);
            prop_assert!(range.contains(IpAddr::V4(Ipv4Addr::from(network))));
        }

        #[test]
        fn a_v6_range_holds_exactly_the_addresses_sharing_its_prefix(
            net in any::<u128>(), prefix in 0u8..=128, probe in any::<u128>()
        ) {
            let network = mask_v6(net, prefix);
            let range = Cidr { network: IpAddr::V6(Ipv6Addr::from(network)), prefix };
            let expected = prefix == 0 || (probe ^ network) >> (128 - u32::from(prefix)) == 0;
            let probe = Ipv6Addr::from(probe);
            // IPv4-mapped probes are compared as IPv4, never against a v6 range.
            prop_assume!(probe.to_ipv4_mapped().is_none());
            prop_assert_eq!(range.contains(IpAddr::V6(probe)), expected);
        }
    }
}
