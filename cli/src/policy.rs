//! `converge policy`: test a merge policy (a built-in or a `.wasm` plugin) against a cases file,
//! and scaffold a new plugin project.

mod scaffold;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Result, anyhow, bail};
use clap::{Args, Subcommand};
use converge_core::MergePolicy;
use converge_policy_test::CaseFile;
use serde_json::json;

/// Options of the policy commands.
#[derive(Args)]
pub(crate) struct PolicyArgs {
    /// Print one JSON document instead of text for people.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: PolicyCommand,
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Run a policy against a cases file: expected answers, determinism, and (if the file asks)
    /// the same end in both arrival orders. Exits 1 if a case fails.
    Test {
        /// A built-in policy (field_merge, lww, server_authoritative) or a path to a `.wasm` plugin.
        #[arg(long)]
        policy: String,
        /// The cases file (JSON; the format is in docs/plugins.md).
        #[arg(long)]
        cases: PathBuf,
    },
    /// Create a new plugin project: Cargo.toml, src/lib.rs with a starter rule, cases.json that
    /// it passes, README.md and .gitignore.
    New {
        /// The plugin's crate name: lowercase letters, digits, `-` and `_`, starting with a letter.
        name: String,
        /// The folder to create it in (default: ./NAME); it must be absent or empty.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The entity type the plugin settles conflicts of (default: NAME, `-` as `_`).
        #[arg(long)]
        entity: Option<String>,
    },
}

pub(crate) fn run(args: PolicyArgs) -> Result<()> {
    match args.command {
        PolicyCommand::Test { policy, cases } => test(&policy, &cases, args.json),
        PolicyCommand::New { name, dir, entity } => {
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            scaffold::validate_name(&name)?;
            let entity = scaffold::entity_for(&name, entity.as_deref())?;
            let files = scaffold::create(&name, &entity, &dir)?;
            if args.json {
                println!("{}", json!({"created": dir, "name": name, "entity": entity, "files": files}));
            } else {
                println!("created the policy plugin {name} in {}: {}", dir.display(), files.join(", "));
                println!(
                    "next: cd {} and follow README.md (build for wasm32-unknown-unknown, then `converge policy test`)",
                    dir.display()
                );
            }
            Ok(())
        }
    }
}

/// The policy `spec` names (see [`load_policy`]), to register for `entity`. A plugin whose
/// `describe()` names other entities is registered all the same, with a warning on stderr.
pub(crate) fn load_policy_for(entity: &str, spec: &str) -> Result<Arc<dyn MergePolicy>> {
    #[cfg(feature = "wasm")]
    if spec.ends_with(".wasm") {
        use anyhow::Context as _;
        let plugin = converge_wasm::PluginEngine::new()?
            .load_file(Path::new(spec))
            .with_context(|| format!("cannot load the plugin {spec}"))?;
        if let Some(warning) = entity_warning(entity, spec, plugin.entities()) {
            eprintln!("{warning}");
        }
        return Ok(Arc::new(plugin));
    }
    let _ = entity;
    load_policy(spec)
}

/// The warning for a plugin registered for an entity its `describe()` does not name.
fn entity_warning(entity: &str, spec: &str, declared: &[String]) -> Option<String> {
    (!declared.is_empty() && !declared.iter().any(|e| e == entity)).then(|| {
        format!(
            "warning: the plugin {spec} says it is for {}, not {entity}; it is registered for {entity} all the same",
            declared.join(", ")
        )
    })
}

/// The policy a `--policy` value names: a built-in by name, or a WASM plugin by a path ending in
/// `.wasm`.
pub(crate) fn load_policy(spec: &str) -> Result<Arc<dyn MergePolicy>> {
    if spec.ends_with(".wasm") {
        #[cfg(feature = "wasm")]
        {
            use anyhow::Context as _;
            let plugin = converge_wasm::PluginEngine::new()?
                .load_file(Path::new(spec))
                .with_context(|| format!("cannot load the plugin {spec}"))?;
            return Ok(Arc::new(plugin));
        }
        #[cfg(not(feature = "wasm"))]
        bail!(
            "{spec}: this build has no WASM plugin support (converge-cli's `wasm` feature); \
             test a built-in instead ({})",
            converge_policies::BUILTINS.join(", ")
        );
    }
    converge_policies::builtin(spec).ok_or_else(|| {
        anyhow!(
            "unknown policy {spec:?}: give a built-in ({}) or the path of a .wasm plugin",
            converge_policies::BUILTINS.join(", ")
        )
    })
}

fn test(policy: &str, cases: &Path, json: bool) -> Result<()> {
    let policy = load_policy(policy)?;
    let file = CaseFile::from_path(cases)?;
    let report = converge_policy_test::run(policy.as_ref(), &file);
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{report}");
    }
    if !report.passed() {
        bail!("{} of {} case(s) failed", report.failed(), report.results.len());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_ins_load_by_name_and_unknown_names_list_them() {
        for name in converge_policies::BUILTINS {
            assert_eq!(load_policy(name).unwrap().name(), name);
        }
        let err = load_policy("fieldmerge").err().expect("unknown").to_string();
        assert!(err.contains("unknown policy \"fieldmerge\"") && err.contains("field_merge, lww"), "{err}");
        let err = load_policy("plugins/x.wasm.json").err().expect("unknown").to_string();
        assert!(err.contains("unknown policy"), "only a .wasm ending means a plugin: {err}");
    }

    #[test]
    fn a_wasm_path_goes_to_the_plugin_loader() {
        let err = format!("{:#}", load_policy("no/such/plugin.wasm").err().expect("no such plugin"));
        if cfg!(feature = "wasm") {
            assert!(err.contains("no/such/plugin.wasm"), "{err}");
        } else {
            assert!(err.contains("this build has no WASM plugin support"), "{err}");
        }
    }
}
