//! Value types of settings (rates, secrets) and how durations, sizes and lists are read.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// A rate such as `500/s`: `count` requests per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub per: Duration,
}

impl std::str::FromStr for Rate {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let refuse =
            || format!("accepts a rate like \"500/s\", \"100/m\" or \"1000/h\", got {text:?}");
        let (count, unit) = text.trim().split_once('/').ok_or_else(refuse)?;
        let count: u32 = count.trim().parse().map_err(|_| refuse())?;
        let per = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            _ => return Err(refuse()),
        };
        if count == 0 {
            return Err(format!("must allow at least 1 request, got {text:?}"));
        }
        Ok(Rate { count, per })
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// A secret from the configuration; never shown by `Debug` (settings may be logged).
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "\"***\"" })
    }
}

/// The longest duration a setting takes: longer ones would overflow the clock arithmetic
/// of timers, and no wait of this service is meant to outlast a century.
pub(super) const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 86_400);

pub(super) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    match humantime::parse_duration(text.trim()) {
        Ok(value) if value <= MAX_DURATION => Ok(value),
        _ => Err(serde::de::Error::custom(format!(
            "accepts a duration like 250ms, 30s, 72h or 30d (at most 100 years), got {text:?}"
        ))),
    }
}

/// A list of CIDR ranges or addresses, in a list or one comma-separated string (as an
/// environment variable gives it).
pub(super) fn cidrs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ipnet::IpNet>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Given {
        One(String),
        Many(Vec<String>),
    }
    let texts = match Given::deserialize(d)? {
        Given::One(text) => text.split(',').map(str::to_string).collect(),
        Given::Many(texts) => texts,
    };
    texts
        .iter()
        .map(|t| t.trim())
        .filter(|t| !t.is_empty())
        .map(|text| {
            text.parse::<ipnet::IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    serde::de::Error::custom(format!(
                        "accepts addresses and CIDR ranges like [\"10.0.0.0/8\"], got {text:?}"
                    ))
                })
        })
        .collect()
}

pub(super) fn durations<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
    let texts = Vec::<String>::deserialize(d)?;
    texts
        .iter()
        .map(|text| match humantime::parse_duration(text.trim()) {
            Ok(value) if value <= MAX_DURATION => Ok(value),
            _ => Err(serde::de::Error::custom(format!(
                "accepts a list of durations like [\"5s\", \"5m\", \"2h\"], got {text:?}"
            ))),
        })
        .collect()
}

pub(super) fn byte_size<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let text = String::deserialize(d)?;
    text.trim()
        .parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64() as usize)
        .map_err(|_| {
            serde::de::Error::custom(format!("accepts a size like 256KiB or 1MiB, got {text:?}"))
        })
}

pub(super) fn optional_rate<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Rate>, D::Error> {
    let text = String::deserialize(d)?;
    if text.trim().is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(serde::de::Error::custom)
}

pub(super) fn optional_seed<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let text = String::deserialize(d)?;
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| {
        serde::de::Error::custom(format!("accepts an unsigned integer or \"\", got {text:?}"))
    })
}
