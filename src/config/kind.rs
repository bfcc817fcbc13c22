//! How each type a setting can have is parsed from a flag and from the
//! config file, written back as flags and JSON, and shown in help.

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::Result;
use clap::builder::{ArgAction, TypedValueParser};
use clap::{Arg, ArgMatches, ValueEnum};
use serde_json::Value;

use crate::error::{invalid, quote};
use crate::scope::Selector;

/// A type a setting can have: how its default is written in the table, how
/// it is parsed from a flag and from JSON, and how it is written back.
pub trait Kind: Sized + Clone + Send + Sync + 'static {
    /// How a default is written in the table (`"/sys"` for a path).
    type Lit;
    fn from_lit(lit: Self::Lit) -> Self;
    /// The value as help and the docs show it.
    fn show(&self) -> String;
    /// Its value parser, action and arity.
    fn arg(arg: Arg) -> Arg;
    fn from_matches(m: &ArgMatches, id: &str) -> Option<Self> {
        m.try_get_one::<Self>(id).ok().flatten().cloned()
    }
    fn from_json(key: &str, v: &Value) -> Result<Self>;
    fn to_json(&self) -> Value;
    /// The flags that set this value.
    fn push_args(&self, flag: &str, out: &mut Vec<OsString>) {
        out.push(format!("--{flag}").into());
        out.push(self.show().into());
    }
}

impl Kind for PathBuf {
    type Lit = &'static str;
    fn from_lit(lit: &'static str) -> Self {
        lit.into()
    }
    fn show(&self) -> String {
        self.display().to_string()
    }
    fn arg(arg: Arg) -> Arg {
        arg.value_parser(clap::value_parser!(PathBuf))
    }
    fn from_json(key: &str, v: &Value) -> Result<Self> {
        str_of(key, v).map(PathBuf::from)
    }
    fn to_json(&self) -> Value {
        Value::String(self.to_string_lossy().into_owned())
    }
    fn push_args(&self, flag: &str, out: &mut Vec<OsString>) {
        out.push(format!("--{flag}").into());
        out.push(self.into());
    }
}

/// A path that may be off: `null` or `""` in the config file.
impl Kind for Option<PathBuf> {
    type Lit = Option<&'static str>;
    fn from_lit(lit: Option<&'static str>) -> Self {
        lit.map(PathBuf::from)
    }
    fn show(&self) -> String {
        self.as_ref().map_or("off".into(), PathBuf::show)
    }
    /// `--metrics-file=` (empty) is off.
    fn arg(arg: Arg) -> Arg {
        arg.value_parser(clap::builder::OsStringValueParser::new().map(PathBuf::from))
    }
    fn from_matches(m: &ArgMatches, id: &str) -> Option<Self> {
        PathBuf::from_matches(m, id).map(|p| Some(p).filter(|p| !p.as_os_str().is_empty()))
    }
    fn from_json(key: &str, v: &Value) -> Result<Self> {
        match v {
            Value::Null => Ok(None),
            v => Ok(Some(PathBuf::from_json(key, v)?).filter(|p| !p.as_os_str().is_empty())),
        }
    }
    fn to_json(&self) -> Value {
        self.as_ref().map_or(Value::Null, PathBuf::to_json)
    }
    fn push_args(&self, flag: &str, out: &mut Vec<OsString>) {
        match self {
            Some(p) => p.push_args(flag, out),
            None => out.push(format!("--{flag}=").into()),
        }
    }
}

impl Kind for String {
    type Lit = &'static str;
    fn from_lit(lit: &'static str) -> Self {
        lit.into()
    }
    fn show(&self) -> String {
        self.clone()
    }
    fn arg(arg: Arg) -> Arg {
        arg.value_parser(clap::value_parser!(String))
    }
    fn from_json(key: &str, v: &Value) -> Result<Self> {
        str_of(key, v).map(str::to_string)
    }
    fn to_json(&self) -> Value {
        Value::String(self.clone())
    }
}

/// Repeated on the command line, once per element; a JSON array.
impl Kind for Vec<String> {
    type Lit = Vec<String>;
    fn from_lit(lit: Vec<String>) -> Self {
        lit
    }
    fn show(&self) -> String {
        self.join(" ")
    }
    fn arg(arg: Arg) -> Arg {
        String::arg(arg).action(ArgAction::Append)
    }
    fn from_matches(m: &ArgMatches, id: &str) -> Option<Self> {
        Some(m.try_get_many::<String>(id).ok()??.cloned().collect())
    }
    fn from_json(key: &str, v: &Value) -> Result<Self> {
        v.as_array()
            .ok_or_else(|| wrong(key, "an array of strings"))?
            .iter()
            .map(|i| String::from_json(key, i))
            .collect()
    }
    fn to_json(&self) -> Value {
        self.iter().map(String::to_json).collect()
    }
    fn push_args(&self, flag: &str, out: &mut Vec<OsString>) {
        for s in self {
            s.push_args(flag, out);
        }
    }
}

/// A NIC selector (see [`crate::scope`]): one JSON object per flag,
/// repeated; a JSON array of objects in the config file.
impl Kind for Vec<Selector> {
    type Lit = Vec<Selector>;
    fn from_lit(lit: Vec<Selector>) -> Self {
        lit
    }
    fn show(&self) -> String {
        if self.is_empty() {
            return "none".into();
        }
        self.iter()
            .map(Selector::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    }
    fn arg(arg: Arg) -> Arg {
        let id = arg.get_id().to_string();
        arg.value_parser(move |s: &str| -> Result<Selector, String> {
            let v: Value = serde_json::from_str(s)
                .map_err(|e| format!("not a JSON object ({e}): {}", quote(s)))?;
            Selector::from_json(&id, &v).map_err(|e| format!("{e:#}"))
        })
        .action(ArgAction::Append)
    }
    fn from_matches(m: &ArgMatches, id: &str) -> Option<Self> {
        Some(m.try_get_many::<Selector>(id).ok()??.cloned().collect())
    }
    fn from_json(key: &str, v: &Value) -> Result<Self> {
        v.as_array()
            .ok_or_else(|| wrong(key, "an array of selector objects"))?
            .iter()
            .map(|i| Selector::from_json(key, i))
            .collect()
    }
    fn to_json(&self) -> Value {
        self.iter().map(Selector::to_json).collect()
    }
    fn push_args(&self, flag: &str, out: &mut Vec<OsString>) {
        for s in self {
            out.push(format!("--{flag}").into());
            out.push(s.to_string().into());
        }
    }
}

impl Kind for u64 {
    type Lit = u64;
    fn from_lit(lit: u64) -> Self {
        lit
    }
    fn show(&self) -> String {
        self.to_string()
    }
    fn arg(arg: Arg) -> Arg {
        arg.value_parser(clap::value_parser!(u64))
    }
    fn from_json(key: &str, v: &Value) -> Result<Self> {
        v.as_u64()
            .ok_or_else(|| wrong(key, "a non-negative integer"))
    }
    fn to_json(&self) -> Value {
        (*self).into()
    }
}

impl Kind for u32 {
    type Lit = u32;
    fn from_lit(lit: u32) -> Self {
        lit
    }
    fn show(&self) -> String {
        self.to_string()
    }
    fn arg(arg: Arg) -> Arg {
        arg.value_parser(clap::value_parser!(u32))
    }
    fn from_json(key: &str, v: &Value) -> Result<Self> {
        u32::try_from(u64::from_json(key, v)?).map_err(|_| wrong(key, "a small integer"))
    }
    fn to_json(&self) -> Value {
        (*self).into()
    }
}

/// `--flag` alone means true; `--flag=false` turns it off.
impl Kind for bool {
    type Lit = bool;
    fn from_lit(lit: bool) -> Self {
        lit
    }
    fn show(&self) -> String {
        self.to_string()
    }
    fn arg(arg: Arg) -> Arg {
        arg.value_parser(clap::value_parser!(bool))
            .num_args(0..=1)
            .require_equals(true)
            .default_missing_value("true")
    }
    fn from_json(key: &str, v: &Value) -> Result<Self> {
        v.as_bool().ok_or_else(|| wrong(key, "true or false"))
    }
    fn to_json(&self) -> Value {
        (*self).into()
    }
    fn push_args(&self, flag: &str, out: &mut Vec<OsString>) {
        out.push(format!("--{flag}={self}").into());
    }
}

/// A `ValueEnum`: named by its possible values on the command line and in
/// JSON alike.
macro_rules! choice_kind {
    ($($t:ty),+) => {$(
        impl Kind for $t {
            type Lit = $t;
            fn from_lit(lit: $t) -> Self {
                lit
            }
            fn show(&self) -> String {
                self.to_possible_value()
                    .map(|p| p.get_name().to_string())
                    .unwrap_or_default()
            }
            fn arg(arg: Arg) -> Arg {
                arg.value_parser(clap::value_parser!($t))
            }
            fn from_json(key: &str, v: &Value) -> Result<Self> {
                let s = str_of(key, v)?;
                <$t>::from_str(s, false).map_err(|_| {
                    let names: Vec<String> = <$t>::value_variants().iter().map(Kind::show).collect();
                    wrong(key, &format!("one of {}", names.join(", ")))
                })
            }
            fn to_json(&self) -> Value {
                Value::String(self.show())
            }
        }
    )+};
}

choice_kind!(
    super::Backend,
    super::Dispatch,
    crate::log::LogMode,
    crate::host::cloud::CloudSetting
);

fn wrong(key: &str, want: &str) -> anyhow::Error {
    invalid(format!("{} must be {want}", quote(key)))
}

fn str_of<'a>(key: &str, v: &'a Value) -> Result<&'a str> {
    v.as_str().ok_or_else(|| wrong(key, "a string"))
}
