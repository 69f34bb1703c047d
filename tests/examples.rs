//! Every configuration in nginx-conf/ passes `nginx -t` with the module under test.

mod common;

use common::*;

#[test]
fn example_configurations_pass_nginx_t() {
    let dir = repo().join("nginx-conf");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("conf") {
            continue;
        }
        let prefix = temp_prefix("example");
        let text = std::fs::read_to_string(&path).unwrap();
        let text: String = text
            .lines()
            .map(|l| {
                if l.trim_start().starts_with("load_module ") {
                    format!(
                        "load_module {};\nerror_log {}/logs/error.log;\npid {}/nginx.pid;",
                        module_path().display(),
                        prefix.display(),
                        prefix.display()
                    )
                } else if l.trim_start().starts_with("error_log ")
                    || l.trim_start().starts_with("pid ")
                {
                    String::new()
                } else {
                    l.replace("@PREFIX@", &prefix.display().to_string())
                        .replace("@WWW@", &dir.join("demo-www").display().to_string())
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        let (ok, stderr, _) = nginx_t(&text);
        assert!(ok, "{} fails nginx -t:\n{stderr}", path.display());
        checked += 1;
    }
    assert!(checked >= 2, "examples found: {checked}");
}
