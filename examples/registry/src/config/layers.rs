//! Settings in layers: default < config file < environment < flag (see the module docs
//! of [`super`]).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use clap::ArgMatches;
use clap::parser::ValueSource;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::*;

/// The field names of a group: its keys in the config file.
pub(crate) fn keys_of<T: Serialize + Default>() -> Vec<String> {
    match serde_json::to_value(T::default()) {
        Ok(Value::Object(map)) => map.into_iter().map(|(k, _)| k).collect(),
        _ => Vec::new(),
    }
}

/// Every key the config file takes.
pub fn file_keys() -> BTreeSet<String> {
    [
        keys_of::<CommonArgs>(),
        keys_of::<QuotaArgs>(),
        keys_of::<StorageArgs>(),
        keys_of::<GcArgs>(),
        keys_of::<ServeArgs>(),
        keys_of::<ConnectionArgs>(),
        keys_of::<AccessArgs>(),
        keys_of::<RetentionArgs>(),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// The config file's values and the command line's, to merge group by group.
#[derive(Debug)]
pub struct Layers<'a> {
    /// The subcommand's matches: which values are defaults.
    matches: &'a ArgMatches,
    path: Option<PathBuf>,
    file: Map<String, Value>,
}

impl<'a> Layers<'a> {
    /// Reads the config file at `path`, if any.
    pub fn load(matches: &'a ArgMatches, path: Option<&Path>) -> Result<Self, ConfigError> {
        let text = match path {
            Some(path) => std::fs::read_to_string(path).map_err(|e| ConfigError::File {
                path: Some(path.to_owned()),
                message: e.to_string(),
            })?,
            None => String::new(),
        };
        Layers::parse(matches, path, &text)
    }

    /// `text` as the config file (named `path` in errors).
    pub fn parse(
        matches: &'a ArgMatches,
        path: Option<&Path>,
        text: &str,
    ) -> Result<Self, ConfigError> {
        let error = |message: String| ConfigError::File {
            path: path.map(Path::to_owned),
            message,
        };
        let table: toml::Table = toml::from_str(text).map_err(|e| error(e.to_string()))?;
        let known = file_keys();
        if let Some(unknown) = table.keys().find(|k| !known.contains(*k)) {
            let known: Vec<&str> = known.iter().map(String::as_str).collect();
            return Err(error(format!(
                "unknown key `{unknown}` (the keys are {})",
                known.join(", ")
            )));
        }
        let file = match serde_json::to_value(table) {
            Ok(Value::Object(map)) => map,
            Ok(_) => Map::new(),
            Err(e) => return Err(error(e.to_string())),
        };
        Ok(Layers {
            matches,
            path: path.map(Path::to_owned),
            file,
        })
    }

    /// `group` as parsed by clap, with the file's values over its defaults (and under
    /// its environment variables and flags).
    pub fn resolve<T: Serialize + DeserializeOwned>(&self, group: &T) -> Result<T, ConfigError> {
        let error = |message: String| ConfigError::File {
            path: self.path.clone(),
            message,
        };
        let parsed = match serde_json::to_value(group) {
            Ok(Value::Object(map)) => map,
            Ok(_) => Map::new(),
            Err(e) => return Err(error(e.to_string())),
        };
        let source = |key: &str| {
            self.matches
                .try_contains_id(key)
                .ok()
                .and_then(|_| self.matches.value_source(key))
        };
        let mut merged = Map::new();
        for (key, value) in &parsed {
            if source(key) == Some(ValueSource::DefaultValue) {
                merged.insert(key.clone(), value.clone());
            }
        }
        for (key, value) in &self.file {
            if parsed.contains_key(key) {
                merged.insert(key.clone(), value.clone());
            }
        }
        for (key, value) in &parsed {
            if matches!(
                source(key),
                Some(ValueSource::EnvVariable | ValueSource::CommandLine)
            ) {
                merged.insert(key.clone(), value.clone());
            }
        }
        // Flags, variables and defaults were typed by clap: only a file value can be
        // of the wrong type, and the error names its key.
        serde_path_to_error::deserialize(Value::Object(merged)).map_err(|e| error(e.to_string()))
    }
}
