//! Small readers shared by the YAML files outside the policy (executor
//! handlers, notify config): what a value is, absent-or-null, a map's
//! entries by key, and how a key path is named in errors.

use yaml_rust2::Yaml;

/// `y`, unless it is absent or `null`.
pub(crate) fn present(y: Option<&Yaml>) -> Option<&Yaml> {
    y.filter(|v| !matches!(v, Yaml::Null))
}

/// What a value is, for "expected …, found …" messages.
pub(crate) fn kind(y: &Yaml) -> &'static str {
    match y {
        Yaml::Real(_) | Yaml::Integer(_) => "a number",
        Yaml::String(_) => "a string",
        Yaml::Boolean(_) => "a boolean",
        Yaml::Array(_) => "a list",
        Yaml::Hash(_) => "a map",
        Yaml::Alias(_) => "an alias",
        Yaml::Null => "null",
        Yaml::BadValue => "an invalid value",
    }
}

/// A YAML map's entries by string key.
pub(crate) struct Map<'y>(pub(crate) Vec<(String, &'y Yaml)>);

impl<'y> Map<'y> {
    pub(crate) fn get(&self, key: &str) -> Option<&'y Yaml> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }
}

/// A key path as errors name it: `(top level)` for the document itself.
pub(crate) fn place(path: &str) -> String {
    if path.is_empty() {
        "(top level)".to_string()
    } else {
        path.to_string()
    }
}
