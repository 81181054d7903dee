//! Every curl example in README.md and docs/API.md runs, in order, against a
//! fresh node, and prints what the document says it prints.
//!
//! In a ```sh block, a line `$ curl ...` is a command; the next line is the
//! status line it must print, and a following line that is not another
//! command, when present, the exact body.

mod common;

use common::Node;
use std::path::Path;
use std::process::Command;

struct Example {
    command: String,
    status: String,
    body: Option<String>,
}

fn examples(markdown: &str) -> Vec<Example> {
    let mut out = Vec::new();
    let mut in_sh = false;
    let mut lines = markdown.lines().peekable();
    while let Some(line) = lines.next() {
        if line.starts_with("```") {
            in_sh = !in_sh && line.trim() == "```sh";
            continue;
        }
        let Some(command) = line.strip_prefix("$ ").filter(|_| in_sh) else { continue };
        if !command.starts_with("curl ") {
            continue;
        }
        let status = lines.next().expect("a status line after each command").to_string();
        let body = match lines.peek() {
            Some(next) if !next.starts_with("$ ") && !next.starts_with("```") => {
                lines.next().map(str::to_string)
            }
            _ => None,
        };
        out.push(Example { command: command.to_string(), status, body });
    }
    out
}

fn run_examples(doc: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(doc);
    let markdown = std::fs::read_to_string(&path).unwrap();
    let examples = examples(&markdown);
    assert!(!examples.is_empty(), "{doc} has no curl examples");
    let node = Node::start(&[]);
    for ex in examples {
        let command = ex.command.replace("127.0.0.1:7070", &node.addr);
        let output = Command::new("sh").args(["-c", &command]).output().expect("run sh");
        let text = String::from_utf8_lossy(&output.stdout).replace('\r', "");
        let status = text.lines().next().unwrap_or("");
        assert_eq!(status, ex.status, "{doc}: {}\n{text}", ex.command);
        if let Some(body) = &ex.body {
            let got = text.split_once("\n\n").map(|(_, b)| b).unwrap_or("");
            assert_eq!(got.trim_end(), body, "{doc}: {}", ex.command);
        }
    }
}

#[test]
fn docs_examples_work() {
    run_examples("docs/API.md");
}

#[test]
fn readme_examples_work() {
    run_examples("README.md");
}
