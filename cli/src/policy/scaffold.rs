//! `converge policy new`: a plugin project that builds standalone for wasm32-unknown-unknown,
//! with a starter rule and a cases file that rule passes.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// The files of a new project: (path inside the project, template).
const TEMPLATES: [(&str, &str); 5] = [
    ("Cargo.toml", include_str!("template/Cargo.toml.tmpl")),
    ("src/lib.rs", include_str!("template/lib.rs.tmpl")),
    ("cases.json", include_str!("template/cases.json.tmpl")),
    ("README.md", include_str!("template/README.md.tmpl")),
    (".gitignore", include_str!("template/gitignore.tmpl")),
];

/// Names the generated type must not take: the SDK's own items, glob-imported by the template.
const SDK_NAMES: [&str; 8] = ["Description", "FieldMeta", "Fields", "Input", "Map", "Outcome", "Policy", "Value"];

/// Crate names Cargo refuses or that shadow a built-in crate.
const RESERVED: [&str; 47] = [
    "abstract",
    "alloc",
    "as",
    "async",
    "await",
    "become",
    "box",
    "break",
    "const",
    "continue",
    "core",
    "crate",
    "do",
    "dyn",
    "else",
    "enum",
    "extern",
    "false",
    "final",
    "fn",
    "for",
    "if",
    "impl",
    "in",
    "let",
    "loop",
    "macro",
    "match",
    "mod",
    "move",
    "mut",
    "override",
    "priv",
    "proc_macro",
    "pub",
    "ref",
    "return",
    "self",
    "static",
    "std",
    "struct",
    "super",
    "test",
    "trait",
    "true",
    "type",
    "unsafe",
];

/// The SDK this build of converge belongs with: `plugins/sdk` of its source tree.
fn sdk_path() -> PathBuf {
    let cli = Path::new(env!("CARGO_MANIFEST_DIR"));
    cli.parent().unwrap_or(cli).join("plugins").join("sdk")
}

/// Checks a plugin's crate name: 1 to 64 of lowercase letters, digits, `-` and `_`, starting
/// with a letter, not a Rust keyword or built-in crate.
pub(super) fn validate_name(name: &str) -> Result<()> {
    let well_formed = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_'));
    if !well_formed {
        bail!(
            "{name:?} is not a plugin name: use 1-64 lowercase letters, digits, '-' and '_', starting with a \
             letter (e.g. inventory-merge)"
        );
    }
    if RESERVED.contains(&name) || name == "proc-macro" {
        bail!("{name:?} is reserved by Rust; pick another plugin name");
    }
    Ok(())
}

/// The Rust type for a crate name: `demo-rule` → `DemoRule` (`…Rule` if that is an SDK name).
fn type_name(name: &str) -> String {
    let mut ty: String = name
        .split(['-', '_'])
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map(|c| c.to_ascii_uppercase()).into_iter().chain(chars).collect::<String>()
        })
        .collect();
    if SDK_NAMES.contains(&ty.as_str()) {
        ty.push_str("Rule");
    }
    ty
}

/// A TOML basic string's contents.
fn toml_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// The project's files with the name, type and SDK path filled in.
pub(super) fn render(name: &str, entity: &str, sdk: &Path) -> Vec<(&'static str, String)> {
    let sdk = toml_escape(&sdk.to_string_lossy());
    TEMPLATES
        .iter()
        .map(|(path, template)| {
            let text = template
                .replace("{{name}}", name)
                .replace("{{entity}}", entity)
                .replace("{{lib}}", &name.replace('-', "_"))
                .replace("{{type}}", &type_name(name))
                .replace("{{sdk}}", &sdk);
            (*path, text)
        })
        .collect()
}

/// The entity a new plugin is for: `entity`, or else its name as an entity (`-` as `_`).
pub(super) fn entity_for(name: &str, entity: Option<&str>) -> Result<String> {
    let entity = entity.map_or_else(|| name.replace('-', "_"), str::to_owned);
    converge_core::model::validate_entity(&entity)
        .map_err(|e| anyhow::anyhow!("{e}; name the entity the plugin is for with --entity (e.g. --entity notes)"))?;
    Ok(entity)
}

/// Writes a new project for `entity` into `dir`, which must be absent or empty. Returns the
/// files written.
pub(super) fn create(name: &str, entity: &str, dir: &Path) -> Result<Vec<String>> {
    validate_name(name)?;
    if dir.exists() {
        let mut entries = dir.read_dir().with_context(|| format!("{} is not a folder", dir.display()))?;
        if entries.next().is_some() {
            bail!("{} is not empty: `converge policy new` overwrites nothing; pick another --dir", dir.display());
        }
    }
    let mut written = Vec::new();
    for (path, text) in render(name, entity, &sdk_path()) {
        let file = dir.join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
        }
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&file)
            .with_context(|| format!("cannot create {}", file.display()))?;
        out.write_all(text.as_bytes()).with_context(|| format!("cannot write {}", file.display()))?;
        written.push(path.to_owned());
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use converge_core::model::apply_patch;
    use converge_core::{CheckMode, Resolution};
    use converge_policy_test::{CaseFile, Failure, run};

    use super::*;

    /// The template's rule (src/lib.rs.tmpl), line for line, as a Rust closure.
    fn starter_rule() -> std::sync::Arc<dyn converge_core::MergePolicy> {
        converge_policies::policy_fn("demo-rule", CheckMode::Fields, |input| {
            if input.server_deleted {
                return Resolution::NeedsReview { reason: "the record was deleted on the server".into() };
            }
            if input.local.is_empty() {
                return Resolution::NeedsReview {
                    reason: "the record was deleted here but changed on the server".into(),
                };
            }
            if input.local.keys().any(|field| input.conflicting.contains(field)) {
                return Resolution::TakeServer;
            }
            let mut fields = input.server.clone();
            apply_patch(&mut fields, input.local);
            Resolution::Merged { fields, notice: "merged update".into() }
        })
    }

    fn rendered(name: &str, file: &str) -> String {
        render(name, "notes", Path::new("/src/converge/plugins/sdk")).into_iter().find(|(p, _)| *p == file).unwrap().1
    }

    #[test]
    fn the_generated_cases_pass_with_the_generated_rule() {
        let cases = CaseFile::from_json(&rendered("demo-rule", "cases.json")).unwrap();
        assert_eq!(cases.policy, "demo-rule");
        assert_eq!(cases.cases.len(), 4);
        let report = run(starter_rule().as_ref(), &cases);
        assert!(report.passed(), "{report}");
        let kinds: Vec<&str> = report.results.iter().map(|r| r.answer.kind()).collect();
        assert_eq!(kinds, ["merged", "take_server", "merged", "needs_review"]);
    }

    #[test]
    fn the_starter_rule_is_order_dependent_as_its_readme_says() {
        let mut cases = CaseFile::from_json(&rendered("demo-rule", "cases.json")).unwrap();
        assert!(!cases.order_independent);
        assert!(rendered("demo-rule", "README.md").contains("\"order_independent\": false"));
        cases.order_independent = true;
        let report = run(starter_rule().as_ref(), &cases);
        let failing: Vec<&str> = report.results.iter().filter(|r| !r.passed()).map(|r| r.name.as_str()).collect();
        assert_eq!(failing, ["a field changed on both sides keeps the server's value"], "{report}");
        assert!(matches!(report.results[1].failures[0], Failure::OrderDependent { .. }));
    }

    #[test]
    fn the_rule_in_the_template_is_the_one_tested_here() {
        let lib = rendered("demo-rule", "src/lib.rs");
        for line in [
            "pub struct DemoRule;",
            "impl Policy for DemoRule {",
            "export_policy!(DemoRule);",
            "name: \"demo-rule\".into(),",
            "if input.local.keys().any(|field| input.conflicting.contains(field)) {",
            "return Outcome::TakeServer;",
            "Outcome::Merged { fields, notice: \"merged update\".into() }",
        ] {
            assert!(lib.contains(line), "{line:?} not in:\n{lib}");
        }
        assert!(!lib.contains("{{"), "every placeholder is filled:\n{lib}");
    }

    #[test]
    fn the_manifest_builds_a_small_standalone_cdylib_on_the_sdk() {
        let toml = rendered("demo-rule", "Cargo.toml");
        for line in [
            "name = \"demo-rule\"",
            "crate-type = [\"cdylib\"]",
            "converge-plugin-sdk = { path = \"/src/converge/plugins/sdk\" }",
            "opt-level = \"s\"",
            "panic = \"abort\"",
            "lto = true",
            "\n[workspace]\n",
        ] {
            assert!(toml.contains(line), "{line:?} not in:\n{toml}");
        }
        let windows = render("x", "notes", Path::new(r#"C:\a "b"\sdk"#));
        assert!(windows[0].1.contains(r#"path = "C:\\a \"b\"\\sdk""#), "{}", windows[0].1);
        assert!(sdk_path().is_absolute() && sdk_path().ends_with("plugins/sdk"));
        let readme = rendered("demo-rule", "README.md");
        assert!(readme.contains("--policy target/wasm32-unknown-unknown/release/demo_rule.wasm --cases cases.json"));
    }

    #[test]
    fn the_plugin_is_for_the_entity_named() {
        assert_eq!(entity_for("shelf-rule", None).unwrap(), "shelf_rule");
        assert_eq!(entity_for("shelf-rule", Some("items")).unwrap(), "items");
        assert!(entity_for("x", Some("Bad Entity")).unwrap_err().to_string().contains("--entity"));
        let lib = render("r", "items", Path::new("/sdk")).into_iter().find(|(p, _)| *p == "src/lib.rs").unwrap().1;
        assert!(lib.contains(r#"entities: vec!["items".into()]"#), "{lib}");
    }

    #[test]
    fn names_are_crate_names() {
        for ok in ["demo-rule", "a", "inv_2", "x-y_z9"] {
            validate_name(ok).unwrap();
        }
        for bad in ["", "Demo", "2fast", "-x", "a b", "a.b", "ümlaut", &"a".repeat(65)] {
            let err = validate_name(bad).unwrap_err().to_string();
            assert!(err.contains("is not a plugin name"), "{bad:?}: {err}");
        }
        for reserved in ["test", "std", "self", "proc-macro"] {
            assert!(validate_name(reserved).unwrap_err().to_string().contains("reserved"), "{reserved}");
        }
        assert_eq!(type_name("demo-rule"), "DemoRule");
        assert_eq!(type_name("inv_2__x"), "Inv2X");
        assert_eq!(type_name("policy"), "PolicyRule", "no clash with the SDK's trait");
    }
}
