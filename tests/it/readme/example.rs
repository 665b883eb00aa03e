//! Reading the README's examples: fenced blocks, the curl commands in them (this test's
//! own reading of the few curl options the README uses), and answers with placeholders.

use serde_json::Value;

/// A fenced block: its info string (```json 202 → "json 202") and its text.
pub struct Block {
    pub info: String,
    pub text: String,
    /// 1-based line of the opening fence, for messages.
    pub line: usize,
}

/// The fenced blocks of the README between the headings `from` and `to` (exclusive).
pub fn blocks(markdown: &str, from: &str, to: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut inside = false;
    let mut open: Option<Block> = None;
    for (i, line) in markdown.lines().enumerate() {
        if open.is_none() && line == from {
            inside = true;
        } else if open.is_none() && line == to {
            break;
        }
        if !inside {
            continue;
        }
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(info)) => {
                open = Some(Block {
                    info: info.trim().to_string(),
                    text: String::new(),
                    line: i + 1,
                })
            }
            (Some(_), Some("")) => blocks.extend(open.take()),
            (Some(block), _) => {
                block.text.push_str(line);
                block.text.push('\n');
            }
            (None, None) => {}
        }
    }
    blocks
}

/// A shell command line as words: quotes removed, `$KEY` expanded in double quotes and
/// bare words, backslash-newline joining lines, `#` starting a comment.
pub fn commands(script: &str, key: &str) -> Vec<Vec<String>> {
    let mut commands = Vec::new();
    let mut words: Vec<String> = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = script.chars().peekable();
    let expand = |text: &str| text.replace("$KEY", key);
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'\n') => {
                chars.next();
            }
            '\'' => {
                let quoted: String = chars.by_ref().take_while(|&c| c != '\'').collect();
                word.get_or_insert_with(String::new).push_str(&quoted);
            }
            '"' => {
                let quoted: String = chars.by_ref().take_while(|&c| c != '"').collect();
                word.get_or_insert_with(String::new)
                    .push_str(&expand(&quoted));
            }
            '#' if word.is_none() => while chars.next_if(|&c| c != '\n').is_some() {},
            '\n' | ' ' | '\t' => {
                words.extend(word.take().map(|w| expand(&w)));
                if c == '\n' && !words.is_empty() {
                    commands.push(std::mem::take(&mut words));
                }
            }
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word.take().map(|w| expand(&w)));
    if !words.is_empty() {
        commands.push(words);
    }
    commands
}

/// What a curl command asks for.
#[derive(Debug)]
pub struct Request {
    pub method: String,
    /// The path and query (`localhost:8080` is the server under test).
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
}

/// The curl options the README uses; any other fails the test, so an example cannot
/// silently mean something else here than in a shell.
pub fn curl(words: &[String]) -> Request {
    assert_eq!(words[0], "curl");
    let mut request = Request {
        method: String::new(),
        path: String::new(),
        headers: Vec::new(),
        body: None,
    };
    let mut args = words[1..].iter();
    while let Some(arg) = args.next() {
        let mut value = || args.next().expect("an option's value").clone();
        match arg.as_str() {
            "-X" => request.method = value(),
            "-H" => {
                let header = value();
                let (name, v) = header.split_once(':').expect("Name: value");
                request
                    .headers
                    .push((name.to_string(), v.trim().to_string()));
            }
            "-d" => request.body = Some(value()),
            // Output options: what the test compares does not depend on them.
            "-s" | "-i" | "-si" => {}
            "-o" => {
                value();
            }
            url if url.starts_with("localhost:8080") => {
                request.path = url.trim_start_matches("localhost:8080").to_string();
            }
            other => panic!("curl option {other:?} is not understood by tests/it/readme.rs"),
        }
    }
    if request.method.is_empty() {
        request.method = if request.body.is_some() {
            "POST"
        } else {
            "GET"
        }
        .into();
    }
    let has_type = request
        .headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("content-type"));
    if request.body.is_some() && !has_type {
        // What curl -d sends without a Content-Type of its own.
        request.headers.push((
            "Content-Type".into(),
            "application/x-www-form-urlencoded".into(),
        ));
    }
    request
}

/// A placeholder for what differs between runs: `<timestamp>`, `<event id>`, … (letters,
/// digits, spaces and `-_,.`; so `<p>html</p>` is a value, not a placeholder).
pub fn is_placeholder(text: &str) -> bool {
    text.len() > 2
        && text.starts_with('<')
        && text.ends_with('>')
        && text[1..text.len() - 1]
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || " -_,.".contains(c))
}

/// Differences between the README's JSON and the real one, by JSON path.
pub fn compare_json(shown: &Value, real: &Value, path: &str, out: &mut Vec<String>) {
    match (shown, real) {
        (Value::String(s), _) if is_placeholder(s) => {}
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                match b.get(k) {
                    Some(r) => compare_json(v, r, &format!("{path}.{k}"), out),
                    None => out.push(format!("{path}.{k}: shown, but not in the answer")),
                }
            }
            for k in b.keys().filter(|k| !a.contains_key(*k)) {
                out.push(format!("{path}.{k}: in the answer, not shown"));
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (v, r)) in a.iter().zip(b).enumerate() {
                compare_json(v, r, &format!("{path}[{i}]"), out);
            }
        }
        _ if shown == real => {}
        _ => out.push(format!("{path}: shown {shown}, answered {real}")),
    }
}

/// Whether `text` matches `pattern`, where each `<…>` placeholder in `pattern` stands for
/// any run of characters without a space.
pub fn matches_line(pattern: &str, text: &str) -> bool {
    match pattern.find('<').and_then(|start| {
        let end = start + pattern[start..].find('>')?;
        is_placeholder(&pattern[start..=end]).then_some((start, end))
    }) {
        None => pattern == text,
        Some((start, end)) => {
            let (head, rest) = (&pattern[..start], &pattern[end + 1..]);
            let Some(tail) = text.strip_prefix(head) else {
                return false;
            };
            (0..=tail.len())
                .filter(|&n| tail.is_char_boundary(n) && !tail[..n].contains(' '))
                .any(|n| matches_line(rest, &tail[n..]))
        }
    }
}
