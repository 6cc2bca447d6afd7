//! Settings from a config file and `SELFHEAL_*` variables, for every flag
//! of every subcommand.
//!
//! The command line is built by clap from [`Cli`]; before parsing, every
//! long flag of every subcommand gets
//!
//! * a variable `SELFHEAL_<FLAG>` (`--foo-bar` → `SELFHEAL_FOO_BAR`) unless
//!   it already has one, and
//! * the config file's value, if any, as its default.
//!
//! clap then applies flag > variable > default, so the file sits between
//! the environment and the built-in default. `-X` Kafka settings are merged
//! per key instead (file, then `SELFHEAL_KAFKA_<NAME>`, then `-X`), see
//! [`selfheal::live::set_file_settings`].

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, CommandFactory, FromArgMatches};
use yaml_rust2::{Yaml, YamlLoader};

use super::Cli;

/// The section of settings shared by every command with Kafka flags.
const KAFKA_SECTION: &str = "kafka";
/// The key, in the `kafka` section, of the pass-through client settings.
const SETTINGS_KEY: &str = "settings";
/// Id of the `-X` argument in [`selfheal::live::KafkaArgs`].
const SETTINGS_ID: &str = "settings";

/// One value of the file for one flag.
#[derive(Debug, Clone)]
enum FileValue {
    One(String),
    Many(Vec<String>),
}

impl FileValue {
    fn values(&self) -> Vec<String> {
        match self {
            FileValue::One(v) => vec![v.clone()],
            FileValue::Many(v) => v.clone(),
        }
    }
}

/// A loaded config file.
#[derive(Debug, Default)]
struct ConfigFile {
    path: PathBuf,
    /// Flag values by command path (`["engine"]`, `["audit", "verify"]`),
    /// then by long flag name.
    sections: BTreeMap<Vec<String>, BTreeMap<String, FileValue>>,
    /// The `kafka` section's flags (brokers, topic-prefix).
    kafka: BTreeMap<String, FileValue>,
    /// Client settings of the `kafka` section, and per command.
    settings: Vec<Setting>,
    command_settings: BTreeMap<Vec<String>, Vec<Setting>>,
}

/// A pass-through Kafka client setting from the file.
#[derive(Debug, Clone)]
struct Setting {
    key: String,
    value: String,
    /// Where a secret came from (`env NAME`, `file PATH`), when indirect.
    via: Option<String>,
}

/// Parses the command line with the config file and the environment;
/// `None` when `--print-config` printed the effective settings instead.
pub fn parse(args: Vec<OsString>) -> anyhow::Result<Option<Cli>> {
    let path = config_path(&args);
    let mut cmd = Cli::command();
    let file = match &path {
        Some(p) => Some(ConfigFile::read(p, &cmd)?),
        None => None,
    };
    let empty = ConfigFile::default();
    let f = file.as_ref().unwrap_or(&empty);
    let mut from_file = BTreeSet::new();
    let mut declared = BTreeSet::new();
    declared_envs(&cmd, &mut declared);
    cmd = decorate(cmd, &[], f, &declared, &mut from_file)?;
    let matches = match cmd.clone().try_get_matches_from(args) {
        Ok(m) => m,
        Err(e) => e.exit(),
    };
    let cli = Cli::from_arg_matches(&matches).map_err(|e| anyhow!("{e}"))?;
    let (leaf_path, leaf_matches) = leaf(&matches);
    let mut leaf_cmd = &cmd;
    for name in &leaf_path {
        leaf_cmd = leaf_cmd
            .find_subcommand(name)
            .context("subcommand vanished")?;
    }
    // The `kafka` section's client settings go where its brokers go.
    let shared = leaf_cmd
        .get_arguments()
        .any(|a| a.get_id().as_str() == "brokers" && takes_shared(a));
    let mut settings: BTreeMap<String, Setting> = BTreeMap::new();
    for s in f
        .settings
        .iter()
        .filter(|_| shared)
        .chain(f.command_settings.get(&leaf_path).into_iter().flatten())
    {
        settings.insert(s.key.clone(), s.clone());
    }
    selfheal::live::set_file_settings(
        settings
            .values()
            .map(|s| (s.key.clone(), s.value.clone()))
            .collect(),
    );
    if matches.get_flag("print_config") {
        print_config(f, &leaf_path, leaf_cmd, leaf_matches, &from_file, &settings);
        return Ok(None);
    }
    Ok(Some(cli))
}

/// `--config FILE` / `--config=FILE` before any `--`, else `SELFHEAL_CONFIG`.
fn config_path(args: &[OsString]) -> Option<PathBuf> {
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let s = a.to_string_lossy();
        if s == "--" {
            break;
        }
        if s == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(v) = s.strip_prefix("--config=") {
            return Some(PathBuf::from(v));
        }
    }
    std::env::var_os("SELFHEAL_CONFIG")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The `SELFHEAL_*` variable of a long flag.
pub fn env_name(long: &str) -> String {
    format!("SELFHEAL_{}", long.to_ascii_uppercase().replace('-', "_"))
}

fn is_global(id: &str) -> bool {
    matches!(id, "config" | "print_config" | "help" | "version")
}

fn takes_values(a: &clap::Arg) -> bool {
    !matches!(
        a.get_action(),
        ArgAction::Help | ArgAction::HelpShort | ArgAction::HelpLong | ArgAction::Version
    )
}

/// Whether a file key names this argument: its long flag, or its field
/// name with `-` for `_`.
fn key_matches(a: &clap::Arg, key: &str) -> bool {
    a.get_long() == Some(key) || a.get_id().as_str().replace('_', "-") == key
}

/// Whether the `kafka` section fills in this argument: not where leaving
/// the flag out means something (`replay`, `demo` and `bench` without
/// `--brokers` read a file or run an embedded broker).
fn takes_shared(a: &clap::Arg) -> bool {
    a.is_required_set() || !a.get_default_values().is_empty()
}

/// The ids of the Kafka arguments shared by the live commands.
fn kafka_ids() -> BTreeSet<String> {
    let c = <selfheal::live::KafkaArgs as clap::Args>::augment_args(clap::Command::new("k"));
    c.get_arguments().map(|a| a.get_id().to_string()).collect()
}

/// Every variable name some argument declares itself.
fn declared_envs(cmd: &clap::Command, into: &mut BTreeSet<String>) {
    for a in cmd.get_arguments() {
        if let Some(e) = a.get_env() {
            into.insert(e.to_string_lossy().into_owned());
        }
    }
    for s in cmd.get_subcommands() {
        declared_envs(s, into);
    }
}

/// Adds variables and file defaults to every argument of every
/// subcommand below `path`. A flag gets `SELFHEAL_<FLAG>` unless it has a
/// variable already or another flag declares that name: `replay
/// --brokers` (which chooses replay's input) does not read
/// `SELFHEAL_BROKERS`, the live commands' broker list.
fn decorate(
    mut cmd: clap::Command,
    path: &[String],
    file: &ConfigFile,
    declared: &BTreeSet<String>,
    from_file: &mut BTreeSet<(Vec<String>, String)>,
) -> anyhow::Result<clap::Command> {
    let subs: Vec<String> = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .map(|s| s.get_name().to_string())
        .collect();
    for name in subs {
        let mut p = path.to_vec();
        p.push(name.clone());
        let sub = cmd
            .find_subcommand(&name)
            .cloned()
            .context("subcommand vanished")?;
        let sub = decorate(sub, &p, file, declared, from_file)?;
        cmd = cmd.mut_subcommand(&name, |_| sub);
    }
    if path.is_empty() || cmd.has_subcommands() {
        return Ok(cmd);
    }
    let kafka = kafka_ids();
    let section = file.sections.get(path);
    let args: Vec<clap::Arg> = cmd.get_arguments().cloned().collect();
    for a in args {
        let id = a.get_id().to_string();
        let Some(long) = a.get_long().map(str::to_string) else {
            continue;
        };
        if is_global(&id) || !takes_values(&a) || id == SETTINGS_ID {
            continue;
        }
        let mut a2 = a.clone();
        if matches!(a.get_action(), ArgAction::SetTrue | ArgAction::SetFalse) {
            // Variables and files say `1`, `yes`, `on` as well as `true`.
            a2 = a2.value_parser(clap::builder::BoolishValueParser::new());
        }
        if a.get_env().is_none() && !declared.contains(&env_name(&long)) {
            a2 = a2.env(env_name(&long));
        }
        let value = section
            .and_then(|s| s.iter().find(|(k, _)| key_matches(&a, k)).map(|(_, v)| v))
            .or_else(|| {
                (kafka.contains(&id) && takes_shared(&a))
                    .then(|| file.kafka.iter().find(|(k, _)| key_matches(&a, k)))
                    .flatten()
                    .map(|(_, v)| v)
            });
        if let Some(v) = value {
            let values = v.values();
            let multiple = a.get_num_args().is_some_and(|n| n.max_values() > 1)
                || matches!(a.get_action(), ArgAction::Append);
            if values.len() > 1 && !multiple {
                bail!(
                    "{}: {}.{long}: takes one value, got a list",
                    file.path.display(),
                    path.join(".")
                );
            }
            for one in &values {
                check_value(&a, &long, one).map_err(|e| {
                    let msg = e.to_string();
                    let msg = msg
                        .lines()
                        .next()
                        .unwrap_or_default()
                        .trim_start_matches("error: ")
                        .to_string();
                    anyhow!("{}: {}.{long}: {msg}", file.path.display(), path.join("."))
                })?;
            }
            a2 = a2.default_values(values).required(false);
            from_file.insert((path.to_vec(), id.clone()));
        }
        cmd = cmd.mut_arg(&id, |_| a2);
    }
    Ok(cmd)
}

/// Runs a value through the argument's parser, as if given as a flag.
fn check_value(a: &clap::Arg, long: &str, value: &str) -> Result<(), clap::Error> {
    let parser = match a.get_action() {
        ArgAction::SetTrue | ArgAction::SetFalse => clap::builder::BoolishValueParser::new().into(),
        _ => a.get_value_parser().clone(),
    };
    let probe = clap::Arg::new("value")
        .long(long.to_string())
        .action(ArgAction::Set)
        .value_parser(parser);
    clap::Command::new("selfheal")
        .no_binary_name(true)
        .arg(probe)
        .try_get_matches_from([format!("--{long}={value}")])
        .map(|_| ())
}

impl ConfigFile {
    fn read(path: &Path, cmd: &clap::Command) -> anyhow::Result<ConfigFile> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        let docs =
            YamlLoader::load_from_str(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
        let mut f = ConfigFile {
            path: path.to_path_buf(),
            ..ConfigFile::default()
        };
        let root = match docs.into_iter().next() {
            None | Some(Yaml::Null) => return Ok(f),
            Some(Yaml::Hash(h)) => h,
            Some(_) => bail!(
                "{}: expected a map of sections (kafka, engine, executor, …)",
                path.display()
            ),
        };
        let top: Vec<String> = std::iter::once(KAFKA_SECTION.to_string())
            .chain(
                cmd.get_subcommands()
                    .filter(|s| !s.is_hide_set())
                    .map(|s| s.get_name().to_string()),
            )
            .collect();
        for (k, v) in root {
            let name = key_str(&k, &f.path, "")?;
            if name == KAFKA_SECTION {
                let kafka_cmd = <selfheal::live::KafkaArgs as clap::Args>::augment_args(
                    clap::Command::new(KAFKA_SECTION),
                );
                let (flags, settings) = f.read_flags(&v, &kafka_cmd, &[name])?;
                f.kafka = flags;
                f.settings = settings;
                continue;
            }
            let Some(sub) = cmd
                .get_subcommands()
                .find(|s| s.get_name() == name && !s.is_hide_set())
            else {
                bail!(
                    "{}: unknown section `{name}`{}",
                    f.path.display(),
                    did_you_mean(&name, top.iter().map(String::as_str))
                );
            };
            f.read_section(&v, sub, vec![name])?;
        }
        Ok(f)
    }

    fn read_section(
        &mut self,
        v: &Yaml,
        cmd: &clap::Command,
        path: Vec<String>,
    ) -> anyhow::Result<()> {
        if !cmd.has_subcommands() {
            let (flags, settings) = self.read_flags(v, cmd, &path)?;
            self.sections.insert(path.clone(), flags);
            if !settings.is_empty() {
                self.command_settings.insert(path, settings);
            }
            return Ok(());
        }
        let Yaml::Hash(h) = v else {
            bail!(
                "{}: {}: expected a map of subcommands",
                self.path.display(),
                path.join(".")
            );
        };
        for (k, v) in h {
            let name = key_str(k, &self.path, &path.join("."))?;
            let names: Vec<&str> = cmd.get_subcommands().map(|s| s.get_name()).collect();
            let Some(sub) = cmd.find_subcommand(&name) else {
                bail!(
                    "{}: {}: unknown subcommand `{name}`{}",
                    self.path.display(),
                    path.join("."),
                    did_you_mean(&name, names.into_iter())
                );
            };
            let mut p = path.clone();
            p.push(name);
            self.read_section(v, sub, p)?;
        }
        Ok(())
    }

    /// Reads one command's flags; the pass-through client settings apart.
    fn read_flags(
        &self,
        v: &Yaml,
        cmd: &clap::Command,
        path: &[String],
    ) -> anyhow::Result<(BTreeMap<String, FileValue>, Vec<Setting>)> {
        let place = path.join(".");
        let h = match v {
            Yaml::Null => return Ok(Default::default()),
            Yaml::Hash(h) => h,
            _ => bail!(
                "{}: {place}: expected a map of flag names to values",
                self.path.display()
            ),
        };
        let args: Vec<&clap::Arg> = cmd
            .get_arguments()
            .filter(|a| {
                a.get_long().is_some() && takes_values(a) && !is_global(a.get_id().as_str())
            })
            .collect();
        let mut flags = BTreeMap::new();
        let mut settings = Vec::new();
        for (k, v) in h {
            let key = key_str(k, &self.path, &place)?;
            let is_settings =
                key == SETTINGS_KEY && args.iter().any(|a| a.get_id().as_str() == SETTINGS_ID);
            if is_settings
                || args
                    .iter()
                    .any(|a| a.get_id().as_str() == SETTINGS_ID && key_matches(a, &key))
            {
                settings = self.read_settings(v, &format!("{place}.{key}"))?;
                continue;
            }
            if !args.iter().any(|a| key_matches(a, &key)) {
                let mut names: Vec<&str> = args.iter().filter_map(|a| a.get_long()).collect();
                if args.iter().any(|a| a.get_id().as_str() == SETTINGS_ID) {
                    names.push(SETTINGS_KEY);
                }
                bail!(
                    "{}: {place}: unknown key `{key}`{}",
                    self.path.display(),
                    did_you_mean(&key, names.into_iter())
                );
            }
            let value = match v {
                Yaml::Array(items) => FileValue::Many(
                    items
                        .iter()
                        .map(|i| {
                            scalar(i).ok_or_else(|| {
                                anyhow!(
                                    "{}: {place}.{key}: list items must be plain values",
                                    self.path.display()
                                )
                            })
                        })
                        .collect::<anyhow::Result<_>>()?,
                ),
                other => FileValue::One(scalar(other).ok_or_else(|| {
                    anyhow!(
                        "{}: {place}.{key}: expected a plain value or a list, not a map",
                        self.path.display()
                    )
                })?),
            };
            flags.insert(key, value);
        }
        Ok((flags, settings))
    }

    /// Reads a map of librdkafka settings; `NAME_env: VAR` and
    /// `NAME_file: PATH` read the value of `NAME` from a variable or a file.
    fn read_settings(&self, v: &Yaml, place: &str) -> anyhow::Result<Vec<Setting>> {
        let Yaml::Hash(h) = v else {
            bail!(
                "{}: {place}: expected a map of librdkafka settings (security.protocol: SASL_SSL, …)",
                self.path.display()
            );
        };
        let mut out = Vec::new();
        for (k, v) in h {
            let key = key_str(k, &self.path, place)?;
            let value = scalar(v).ok_or_else(|| {
                anyhow!(
                    "{}: {place}.{key}: expected a plain value",
                    self.path.display()
                )
            })?;
            if let Some(name) = key.strip_suffix("_env") {
                let got = std::env::var(&value).map_err(|_| {
                    anyhow!(
                        "{}: {place}.{key}: variable {value} is not set",
                        self.path.display()
                    )
                })?;
                out.push(Setting {
                    key: name.to_string(),
                    value: got,
                    via: Some(format!("env {value}")),
                });
            } else if let Some(name) = key.strip_suffix("_file") {
                let p = match Path::new(&value) {
                    p if p.is_relative() => self
                        .path
                        .parent()
                        .map_or_else(|| p.to_path_buf(), |d| d.join(p)),
                    p => p.to_path_buf(),
                };
                let got = std::fs::read_to_string(&p).map_err(|e| {
                    anyhow!(
                        "{}: {place}.{key}: reading {}: {e}",
                        self.path.display(),
                        p.display()
                    )
                })?;
                out.push(Setting {
                    key: name.to_string(),
                    value: got.trim_end_matches(['\n', '\r']).to_string(),
                    via: Some(format!("file {}", p.display())),
                });
            } else {
                out.push(Setting {
                    key,
                    value,
                    via: None,
                });
            }
        }
        Ok(out)
    }
}

fn key_str(k: &Yaml, file: &Path, place: &str) -> anyhow::Result<String> {
    scalar(k).ok_or_else(|| {
        anyhow!(
            "{}: {}: keys must be plain names",
            file.display(),
            if place.is_empty() { "top level" } else { place }
        )
    })
}

fn scalar(v: &Yaml) -> Option<String> {
    match v {
        Yaml::String(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Real(r) => Some(r.clone()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// ` (did you mean `x`?)` when a candidate is within two edits.
fn did_you_mean<'a>(key: &str, candidates: impl Iterator<Item = &'a str>) -> String {
    candidates
        .map(|c| (edit_distance(key, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 4))
        .min()
        .map(|(_, c)| format!(" (did you mean `{c}`?)"))
        .unwrap_or_default()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The subcommand path of the parsed command line and its matches.
fn leaf(m: &ArgMatches) -> (Vec<String>, &ArgMatches) {
    let mut path = Vec::new();
    let mut cur = m;
    while let Some((name, sub)) = cur.subcommand() {
        path.push(name.to_string());
        cur = sub;
    }
    (path, cur)
}

/// Whether a setting or flag name holds a secret.
pub fn is_secret(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "password",
        "secret",
        "token",
        "oauthbearer.config",
        "key.pem",
        "credential",
    ]
    .iter()
    .any(|w| n.contains(w))
}

fn print_config(
    f: &ConfigFile,
    path: &[String],
    cmd: &clap::Command,
    m: &ArgMatches,
    from_file: &BTreeSet<(Vec<String>, String)>,
    settings: &BTreeMap<String, Setting>,
) {
    let file = f.path.display();
    println!("# selfheal {}", path.join(" "));
    for a in cmd.get_arguments() {
        let id = a.get_id().as_str();
        let Some(long) = a.get_long() else { continue };
        if is_global(id) || !takes_values(a) || id == SETTINGS_ID {
            continue;
        }
        let source = match m.value_source(id) {
            Some(ValueSource::CommandLine) => "flag".to_string(),
            Some(ValueSource::EnvVariable) => format!(
                "env {}",
                a.get_env().map(|e| e.to_string_lossy()).unwrap_or_default()
            ),
            Some(ValueSource::DefaultValue)
                if from_file.contains(&(path.to_vec(), id.to_string())) =>
            {
                format!("file {file}")
            }
            Some(_) => "default".to_string(),
            None => "unset".to_string(),
        };
        let values: Vec<String> = m
            .get_raw(id)
            .map(|v| v.map(|x| x.to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        let shown = if values.is_empty() {
            "-".to_string()
        } else if is_secret(long) {
            "***".to_string()
        } else {
            values.join(",")
        };
        println!("{long} = {shown}  ({source})");
    }
    if !cmd
        .get_arguments()
        .any(|a| a.get_id().as_str() == SETTINGS_ID)
    {
        return;
    }
    // Kafka client settings, merged per key: file < SELFHEAL_KAFKA_* < -X.
    let mut merged: BTreeMap<String, (String, String)> = BTreeMap::new();
    for s in settings.values() {
        let src = match &s.via {
            Some(v) => format!("file {file}, from {v}"),
            None => format!("file {file}"),
        };
        merged.insert(s.key.clone(), (s.value.clone(), src));
    }
    let mut env: Vec<(String, String, String)> = std::env::vars()
        .filter_map(|(k, v)| {
            let name = k.strip_prefix("SELFHEAL_KAFKA_")?;
            Some((name.to_ascii_lowercase().replace('_', "."), v, k.clone()))
        })
        .collect();
    env.sort();
    for (k, v, var) in env {
        merged.insert(k, (v, format!("env {var}")));
    }
    if let Some(vals) = m.get_raw(SETTINGS_ID) {
        for s in vals {
            let s = s.to_string_lossy();
            if let Some((k, v)) = s.split_once('=') {
                merged.insert(
                    k.trim().to_string(),
                    (v.trim().to_string(), "flag -X".into()),
                );
            }
        }
    }
    for (k, (v, src)) in merged {
        let shown = if is_secret(&k) { "***" } else { v.as_str() };
        println!("-X {k} = {shown}  ({src})");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_names_are_suggested_and_far_ones_not() {
        let c = ["policy", "processing-guarantee", "group"];
        assert_eq!(
            did_you_mean("polcy", c.into_iter()),
            " (did you mean `policy`?)"
        );
        assert_eq!(did_you_mean("zzzzzz", c.into_iter()), "");
    }

    #[test]
    fn env_names_follow_the_long_flag() {
        assert_eq!(env_name("commit-interval"), "SELFHEAL_COMMIT_INTERVAL");
    }
}
