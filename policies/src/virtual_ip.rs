//! Virtual IPs: every mesh service gets one stable loopback address, so an unmodified app can
//! reach `<service>.mesh:<port>` and land on its own host's agent with no iptables. The control
//! plane hands the addresses out from one range; this module is that range.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The loopback block virtual IPs come from, written `a.b.c.d/len`. Linux routes all of
/// 127.0.0.0/8 to `lo`, so an agent can listen on any address in it without configuring one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VirtualIpRange {
    /// The first address of the block (its host bits are zero).
    base: Ipv4Addr,
    /// How many leading bits are fixed, 8–30.
    prefix_len: u8,
}

impl VirtualIpRange {
    /// The shortest prefix allowed: the block must stay inside 127.0.0.0/8.
    pub const MIN_PREFIX: u8 = 8;
    /// The longest prefix allowed: at least a few usable addresses.
    pub const MAX_PREFIX: u8 = 30;

    /// The block `base/prefix_len`, when it is a loopback block that leaves 127.0.0.1 (the
    /// agent's own listeners and most apps) out.
    pub fn new(base: Ipv4Addr, prefix_len: u8) -> Result<Self, String> {
        if !(Self::MIN_PREFIX..=Self::MAX_PREFIX).contains(&prefix_len) {
            return Err(format!(
                "prefix length {prefix_len} is out of range: use /{}–/{}",
                Self::MIN_PREFIX,
                Self::MAX_PREFIX
            ));
        }
        let mask = u32::MAX << (32 - u32::from(prefix_len));
        let bits = u32::from(base);
        if bits & !mask != 0 {
            return Err(format!(
                "{base}/{prefix_len} has host bits set: did you mean {}/{prefix_len}?",
                Ipv4Addr::from(bits & mask)
            ));
        }
        let range = VirtualIpRange { base, prefix_len };
        if !base.is_loopback() {
            return Err(format!(
                "{range} is not a loopback block: virtual IPs must be inside 127.0.0.0/8, where every host routes them to itself"
            ));
        }
        if range.contains(Ipv4Addr::LOCALHOST) {
            return Err(format!(
                "{range} contains 127.0.0.1, which the agent and apps already use: pick a block beside it, like 127.64.0.0/10"
            ));
        }
        Ok(range)
    }

    /// How many addresses the block holds, its first included.
    pub fn size(&self) -> u32 {
        1u32 << (32 - u32::from(self.prefix_len))
    }

    /// The address at `offset` from the start of the block, if the block is that large.
    pub fn address(&self, offset: u32) -> Option<Ipv4Addr> {
        (offset < self.size()).then(|| Ipv4Addr::from(u32::from(self.base) + offset))
    }

    /// Where `address` lies in the block, if it does.
    pub fn offset(&self, address: Ipv4Addr) -> Option<u32> {
        let offset = u32::from(address).wrapping_sub(u32::from(self.base));
        (offset < self.size()).then_some(offset)
    }

    /// Whether `address` is in the block.
    pub fn contains(&self, address: Ipv4Addr) -> bool {
        self.offset(address).is_some()
    }
}

impl Default for VirtualIpRange {
    /// 127.64.0.0/10: four million addresses, clear of 127.0.0.1.
    fn default() -> Self {
        VirtualIpRange {
            base: Ipv4Addr::new(127, 64, 0, 0),
            prefix_len: 10,
        }
    }
}

impl fmt::Display for VirtualIpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix_len)
    }
}

impl FromStr for VirtualIpRange {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (base, len) = text
            .split_once('/')
            .ok_or_else(|| format!("`{text}` is not a block: write it as 127.64.0.0/10"))?;
        let base: Ipv4Addr = base
            .parse()
            .map_err(|_| format!("`{base}` is not an IPv4 address"))?;
        let len: u8 = len
            .parse()
            .map_err(|_| format!("`{len}` is not a prefix length"))?;
        VirtualIpRange::new(base, len)
    }
}

impl Serialize for VirtualIpRange {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for VirtualIpRange {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for VirtualIpRange {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "VirtualIpRange".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "A loopback IPv4 block, `a.b.c.d/len` inside 127.0.0.0/8, without 127.0.0.1.",
            "pattern": "^127\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}/[0-9]{1,2}$"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_127_64_0_0_slash_10() {
        let range = VirtualIpRange::default();
        assert_eq!(range.to_string(), "127.64.0.0/10");
        assert_eq!("127.64.0.0/10".parse::<VirtualIpRange>(), Ok(range));
        assert_eq!(range.size(), 1 << 22);
        assert_eq!(range.address(1), Some(Ipv4Addr::new(127, 64, 0, 1)));
        assert_eq!(range.address(1 << 22), None);
        assert_eq!(
            range.offset(Ipv4Addr::new(127, 127, 255, 255)),
            Some((1 << 22) - 1)
        );
        assert_eq!(range.offset(Ipv4Addr::new(127, 128, 0, 0)), None);
        assert_eq!(range.offset(Ipv4Addr::new(127, 63, 255, 255)), None);
    }

    #[test]
    fn blocks_outside_loopback_or_over_localhost_are_refused() {
        for bad in [
            "10.0.0.0/8",
            "127.0.0.0/8",
            "127.0.0.0/24",
            "127.64.0.1/10",
            "127.64.0.0/7",
            "127.64.0.0/31",
            "127.64.0.0",
            "x/10",
        ] {
            assert!(bad.parse::<VirtualIpRange>().is_err(), "{bad} was accepted");
        }
        assert!("127.1.0.0/16".parse::<VirtualIpRange>().is_ok());
    }
}
