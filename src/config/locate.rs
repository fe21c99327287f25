//! Finds the line of a key path (`services[1].qos`) in YAML text, for error messages.
//!
//! serde reports lines only for syntax and type errors; semantic errors found after
//! deserialising (an unknown QoS class, a bad address) are located here by walking the
//! block structure of the text. Flow-style maps on one line (`{ name: a, mac: … }`) are
//! handled; when a segment cannot be found, the line of the deepest segment found is used.

/// One step of a key path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seg<'a> {
    Key(&'a str),
    Idx(usize),
}

/// `services[1].qos`.
pub fn render(path: &[Seg]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Seg::Idx(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

fn indent(l: &str) -> usize {
    l.len() - l.trim_start().len()
}

fn significant(l: &str) -> bool {
    let t = l.trim_start();
    !t.is_empty() && !t.starts_with('#')
}

/// True when `line` has `key:` as a key (block or flow style).
fn has_key(line: &str, key: &str) -> bool {
    let pat = format!("{key}:");
    let mut from = 0;
    while let Some(p) = line[from..].find(&pat) {
        let at = from + p;
        let before = line[..at].trim_end();
        let ok_before = before.is_empty() || before.ends_with(['{', ',', '-']);
        let after = &line[at + pat.len()..];
        let ok_after = after.is_empty() || after.starts_with([' ', '\t']);
        if ok_before && ok_after {
            return true;
        }
        from = at + pat.len();
    }
    false
}

/// 1-based line of `path` in `text` (best effort; 1 when nothing matches).
pub fn line_of(text: &str, path: &[Seg]) -> usize {
    let lines: Vec<&str> = text.lines().collect();
    let (mut lo, mut hi) = (0usize, lines.len());
    let mut found = 0usize; // 0-based line of the deepest segment found
    let mut inline = false; // the current node is a flow-style one-liner
    let mut after_item = false; // the last segment found was a sequence item
    for seg in path {
        if inline {
            if let Seg::Key(k) = seg
                && has_key(lines[found], k)
            {
                continue;
            }
            break;
        }
        let hit = match seg {
            // A sequence item's first key sits on its `- ` line.
            Seg::Key(k) => {
                let from = if after_item { found } else { lo };
                (from..hi).find(|&i| significant(lines[i]) && has_key(lines[i], k))
            }
            Seg::Idx(n) => {
                let items: Vec<usize> = (lo..hi)
                    .filter(|&i| lines[i].trim_start().starts_with("- ") || lines[i].trim() == "-")
                    .collect();
                let min = items.iter().map(|&i| indent(lines[i])).min();
                let items: Vec<usize> = items
                    .into_iter()
                    .filter(|&i| Some(indent(lines[i])) == min)
                    .collect();
                match items.get(*n) {
                    Some(&i) => Some(i),
                    None => {
                        // A flow sequence on the key's own line: `ports: [80, 81]`.
                        if lines.get(found).is_some_and(|l| l.contains('[')) {
                            inline = true;
                            continue;
                        }
                        None
                    }
                }
            }
        };
        let Some(i) = hit else { break };
        found = i;
        after_item = matches!(seg, Seg::Idx(_));
        let ind = match seg {
            Seg::Idx(_) => indent(lines[i]),
            Seg::Key(_) => indent(lines[i]),
        };
        inline = lines[i].contains('{') && lines[i].trim_end().ends_with('}');
        lo = i + 1;
        hi = (lo..hi)
            .find(|&j| {
                significant(lines[j])
                    && (indent(lines[j]) < ind
                        || (indent(lines[j]) == ind
                            && matches!(seg, Seg::Idx(_))
                            && lines[j].trim_start().starts_with('-'))
                        || (indent(lines[j]) == ind
                            && matches!(seg, Seg::Key(_))
                            && !lines[j].trim_start().starts_with('-')))
            })
            .unwrap_or(hi);
    }
    found + 1
}

/// 1-based line of the second `key` in the mapping at `path` (serde reports a duplicate
/// key at the start of its mapping); the first one's line when no second is found.
pub fn line_of_duplicate(text: &str, path: &[Seg], key: &str) -> usize {
    let mut full = path.to_vec();
    full.push(Seg::Key(key));
    let first = line_of(text, &full);
    let lines: Vec<&str> = text.lines().collect();
    let Some(l) = lines.get(first - 1) else {
        return first;
    };
    let pat = format!("{key}:");
    let Some(col) = l.find(&pat) else {
        return first;
    };
    if !has_key(l, key) || l[col + pat.len()..].contains(&pat) {
        return first; // a one-line flow mapping: both on this line
    }
    for (j, t) in lines.iter().enumerate().skip(first) {
        if !significant(t) {
            continue;
        }
        if indent(t) < col {
            break;
        }
        if indent(t) == col && has_key(t, key) {
            return j + 1;
        }
    }
    first
}

#[cfg(test)]
mod tests {
    use super::Seg::{Idx, Key};
    use super::*;

    const Y: &str = "system: { mac: \"x\", gateway: \"y\" }\nqos:\n  gold: { dscp: ef }\nservices:\n  - name: a\n    vip: 1.2.3.4\n    qos: gold\n    servers:\n      - { name: w1, mac: \"m\" }\n  - name: b\n    vip: bad\n    ports: [80, 81]\n    servers:\n      - name: w2\n        mac: zz\n";

    #[test]
    fn finds_block_and_flow_keys() {
        assert_eq!(line_of(Y, &[Key("system"), Key("mac")]), 1);
        assert_eq!(line_of(Y, &[Key("services"), Idx(0), Key("qos")]), 7);
        assert_eq!(line_of(Y, &[Key("services"), Idx(1), Key("vip")]), 11);
        assert_eq!(
            line_of(
                Y,
                &[Key("services"), Idx(0), Key("servers"), Idx(0), Key("mac")]
            ),
            9
        );
        assert_eq!(
            line_of(
                Y,
                &[Key("services"), Idx(1), Key("servers"), Idx(0), Key("mac")]
            ),
            15
        );
        assert_eq!(
            line_of(Y, &[Key("services"), Idx(1), Key("ports"), Idx(1)]),
            12
        );
        // The first key of an item is on the item's own line.
        assert_eq!(line_of(Y, &[Key("services"), Idx(1), Key("name")]), 10);
        assert_eq!(line_of(Y, &[Key("services"), Idx(0), Key("name")]), 5);
        assert_eq!(
            line_of(
                Y,
                &[Key("services"), Idx(1), Key("servers"), Idx(0), Key("name")]
            ),
            14
        );
        assert_eq!(
            line_of_duplicate(
                "a:\n  - name: x\n    vip: 1\n    # c\n    vip: 2\n  - vip: 3\n",
                &[Key("a"), Idx(0)],
                "vip"
            ),
            5
        );
        // The first key of an item is on the item's own line.
        assert_eq!(line_of(Y, &[Key("services"), Idx(1), Key("name")]), 10);
        assert_eq!(line_of(Y, &[Key("services"), Idx(0), Key("name")]), 5);
        assert_eq!(
            line_of(
                Y,
                &[Key("services"), Idx(1), Key("servers"), Idx(0), Key("name")]
            ),
            14
        );
        assert_eq!(
            line_of_duplicate("a: { b: 1, b: 2 }\n", &[Key("a")], "b"),
            1
        );
        assert_eq!(
            render(&[Key("services"), Idx(1), Key("vip")]),
            "services[1].vip"
        );
    }
}
