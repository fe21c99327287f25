//! ClassBench filter and trace files.
//!
//! Layer: `classify` tooling (benchmarks, tests, the `classbench` subcommand); not on the
//! data path.
//!
//! Filter line (first match wins, line order is priority):
//! `@src/len dst/len sport_lo : sport_hi dport_lo : dport_hi proto/mask`, with any extra
//! tokens (e.g. a raw ClassBench TCP-flags field) ignored, as dpdk-test-acl does. Blank
//! lines and `#` comments are skipped and do not count as rules. IPv4 prefixes are mapped
//! into `::ffff:0:0/96`, so `0.0.0.0/0` means "any IPv4 address". `proto/mask` must be
//! exact (`0xff`) or wildcard (`0x00`); other masks are rejected rather than misread.
//!
//! Trace line: `src dst sport dport proto expected_rule` (unsigned decimal, or hex with
//! `0x`), `expected_rule` 1-based; further columns are ignored.
//!
//! Malformed input yields a [`ParseError`] naming the line; nothing here panics.

use super::{Decision, Key, Range, Rule, prefix_range, v4_mapped};

/// A malformed filter or trace line.
#[derive(Debug, thiserror::Error)]
#[error("line {line}: {msg}")]
pub struct ParseError {
    /// 1-based line number in the file.
    pub line: usize,
    /// What is wrong.
    pub msg: String,
}

fn err(line: usize, msg: impl Into<String>) -> ParseError {
    ParseError {
        line,
        msg: msg.into(),
    }
}

fn num(s: &str) -> Option<u64> {
    if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        u64::from_str_radix(h, 16).ok()
    } else {
        s.parse().ok()
    }
}

fn prefix(tok: &str, line: usize) -> Result<Range<u128>, ParseError> {
    let (a, l) = tok
        .split_once('/')
        .ok_or_else(|| err(line, format!("bad prefix {tok:?}")))?;
    let addr: std::net::Ipv4Addr = a
        .parse()
        .map_err(|_| err(line, format!("bad IPv4 address {a:?}")))?;
    let len: u8 = l
        .parse()
        .ok()
        .filter(|&l| l <= 32)
        .ok_or_else(|| err(line, format!("bad prefix length {l:?}")))?;
    Ok(prefix_range(v4_mapped(addr.octets()), 96 + len))
}

fn port_range(lo: &str, colon: &str, hi: &str, line: usize) -> Result<Range<u16>, ParseError> {
    let p = |s: &str| {
        num(s)
            .and_then(|v| u16::try_from(v).ok())
            .ok_or_else(|| err(line, format!("bad port {s:?}")))
    };
    if colon != ":" {
        return Err(err(
            line,
            format!("expected ':' between ports, got {colon:?}"),
        ));
    }
    let (lo, hi) = (p(lo)?, p(hi)?);
    if lo > hi {
        return Err(err(line, format!("empty port range {lo} : {hi}")));
    }
    Ok(Range::new(lo, hi))
}

/// Parses one filter line (without checking the leading `@` of comments/blank lines).
pub fn parse_rule(s: &str, line: usize, index: u32) -> Result<Rule, ParseError> {
    let s = s.trim();
    let body = s
        .strip_prefix('@')
        .ok_or_else(|| err(line, "rule must start with '@'"))?;
    let t: Vec<&str> = body.split_whitespace().collect();
    if t.len() < 9 {
        return Err(err(line, format!("expected 9 tokens, got {}", t.len())));
    }
    let mut r = Rule::any(Decision::FlowRule(index));
    r.src = prefix(t[0], line)?;
    r.dst = prefix(t[1], line)?;
    r.src_port = port_range(t[2], t[3], t[4], line)?;
    r.dst_port = port_range(t[5], t[6], t[7], line)?;
    let (v, m) = t[8]
        .split_once('/')
        .ok_or_else(|| err(line, "bad proto/mask"))?;
    let (v, m) = match (num(v), num(m)) {
        (Some(v), Some(m)) if v <= 0xff && m <= 0xff => (v as u8, m as u8),
        _ => return Err(err(line, format!("bad proto/mask {:?}", t[8]))),
    };
    r.proto = match m {
        0xff => Range::exact(v),
        0 => Range::new(0, 255),
        _ => return Err(err(line, format!("unsupported proto mask {m:#x}"))),
    };
    Ok(r)
}

/// Parses a filter file; rule `i` gets `Decision::FlowRule(i)`.
pub fn parse_rules(text: &str) -> Result<Vec<Rule>, ParseError> {
    let mut out = Vec::new();
    for (i, l) in text.lines().enumerate() {
        let t = l.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let idx = u32::try_from(out.len()).map_err(|_| err(i + 1, "too many rules"))?;
        out.push(parse_rule(t, i + 1, idx)?);
    }
    Ok(out)
}

/// One trace packet and its expected 0-based first-match rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceEntry {
    pub key: Key,
    /// 0-based index of the expected first matching rule (`None` for "no match", i.e. 0).
    pub expected: Option<u32>,
}

/// Parses a trace file.
pub fn parse_trace(text: &str) -> Result<Vec<TraceEntry>, ParseError> {
    let mut out = Vec::new();
    for (i, l) in text.lines().enumerate() {
        let t: Vec<&str> = l.split_whitespace().collect();
        if t.is_empty() || t[0].starts_with('#') {
            continue;
        }
        if t.len() < 6 {
            return Err(err(i + 1, format!("expected 6 columns, got {}", t.len())));
        }
        let f = |j: usize, max: u64| {
            num(t[j])
                .filter(|&v| v <= max)
                .ok_or_else(|| err(i + 1, format!("bad value {:?} in column {}", t[j], j + 1)))
        };
        let src = f(0, u64::from(u32::MAX))? as u32;
        let dst = f(1, u64::from(u32::MAX))? as u32;
        let key = Key {
            src: v4_mapped(src.to_be_bytes()),
            dst: v4_mapped(dst.to_be_bytes()),
            src_port: f(2, 0xffff)? as u16,
            dst_port: f(3, 0xffff)? as u16,
            proto: f(4, 0xff)? as u8,
            ..Key::default()
        };
        let e = f(5, u64::from(u32::MAX))?;
        out.push(TraceEntry {
            key,
            expected: e.checked_sub(1).map(|e| e as u32),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rule_and_trace_lines() {
        let r = parse_rule(
            "@81.110.124.109/32 249.145.51.3/24 0 : 65535 135 : 135 0x06/0xFF",
            1,
            3,
        )
        .expect("valid line");
        assert_eq!(r.src, Range::exact(v4_mapped([81, 110, 124, 109])));
        assert_eq!(
            r.dst,
            Range::new(v4_mapped([249, 145, 51, 0]), v4_mapped([249, 145, 51, 255]))
        );
        assert_eq!(r.src_port, Range::new(0, 65535));
        assert_eq!(r.dst_port, Range::exact(135));
        assert_eq!(r.proto, Range::exact(6));
        assert_eq!(r.decision, Decision::FlowRule(3));
        // The trace's decimal 1360952429 is 81.30.124.109 (Python: ipaddress.ip_address).
        let t = parse_trace("1360952429 4184911075 0 6849 6 2066\n").expect("valid trace");
        assert_eq!(t[0].key.src, v4_mapped([81, 30, 124, 109]));
        assert_eq!(t[0].key.dst_port, 6849);
        assert_eq!(t[0].expected, Some(2065));
    }

    #[test]
    fn rejects_malformed_lines() {
        for bad in [
            "81.1.1.1/32 1.1.1.1/32 0 : 1 0 : 1 0x06/0xFF",
            "@81.1.1.1/33 1.1.1.1/32 0 : 1 0 : 1 0x06/0xFF",
            "@81.1.1.1/32 1.1.1.1/32 0 - 1 0 : 1 0x06/0xFF",
            "@81.1.1.1/32 1.1.1.1/32 0 : 70000 0 : 1 0x06/0xFF",
            "@81.1.1.1/32 1.1.1.1/32 5 : 1 0 : 1 0x06/0xFF",
            "@81.1.1.1/32 1.1.1.1/32 0 : 1 0 : 1 0x06/0xF0",
            "@81.1.1.1/32 1.1.1.1/32 0 : 1",
        ] {
            assert!(parse_rule(bad, 1, 0).is_err(), "{bad}");
        }
        assert!(parse_trace("1 2 3 4 5\n").is_err());
        assert!(parse_trace("1 2 3 70000 5 1\n").is_err());
    }
}
