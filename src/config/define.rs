//! The machinery behind the one table of settings in `config.rs`: the
//! `settings!` macro, which turns each entry into a field of [`Settings`]
//! and of [`Config`], its flag, its config-file key, its default and its
//! help (how each type of value is read and written is [`Kind`]).
//!
//! [`Settings`]: super::Settings
//! [`Config`]: super::Config
//! [`Kind`]: super::kind::Kind

/// One setting: what help, the docs and the command line know of it.
#[derive(Clone, Copy, Debug)]
pub struct Setting {
    /// The config-file key (`settle_ms`).
    pub key: &'static str,
    /// The long flag without its dashes (`settle-ms`).
    pub flag: &'static str,
    /// The help heading it is listed under.
    pub heading: &'static str,
    /// One line of help, without the default.
    pub doc: &'static str,
    /// The subcommands whose behaviour it changes (`all` for every one).
    pub uses: &'static [&'static str],
    /// The default as help, the README and the man page show it ("" when
    /// there is none).
    pub default: fn() -> String,
    /// The value's name in help (`MS`).
    pub value_name: &'static str,
    /// Gives a clap argument this setting's value parser and arity.
    pub parser: fn(clap::Arg) -> clap::Arg,
}

impl Setting {
    /// Whether subcommand `sub` (`handle`, `imds`...) uses this setting.
    pub fn used_by(&self, sub: &str) -> bool {
        self.uses.iter().any(|u| *u == sub || *u == "all")
    }

    /// The help line: the doc and the default.
    pub fn help(&self) -> String {
        match (self.default)() {
            d if d.is_empty() => self.doc.to_string(),
            d => format!("{} [default: {d}]", self.doc),
        }
    }

    /// Its command-line argument (id: the key), listed in help if `shown`.
    pub fn arg(&self, shown: bool) -> clap::Arg {
        (self.parser)(
            clap::Arg::new(self.key)
                .long(self.flag)
                .value_name(self.value_name)
                .help(self.help())
                .help_heading(self.heading)
                .hide(!shown),
        )
    }
}

/// `settle_ms` → `settle-ms`, at compile time (see `flag_of!`).
pub const fn dashed<const N: usize>(key: &str) -> [u8; N] {
    let b = key.as_bytes();
    let mut out = [0u8; N];
    let mut i = 0;
    while i < N {
        out[i] = if b[i] == b'_' { b'-' } else { b[i] };
        i += 1;
    }
    out
}

/// The long flag of a setting: its key with `_` → `-`, as a `&'static str`.
macro_rules! flag_of {
    ($field:ident) => {{
        const KEY: &str = stringify!($field);
        const BYTES: [u8; KEY.len()] = $crate::config::define::dashed(KEY);
        const FLAG: &str = match std::str::from_utf8(&BYTES) {
            Ok(s) => s,
            Err(_) => panic!("a setting's name is ASCII"),
        };
        FLAG
    }};
}

/// Declares every setting once. Each entry, under a help heading:
///
/// ```text
/// /// Help text, without the default (lines are joined)
/// key: Type = default, "VALUE-NAME", [subcommands that use it];
/// ```
///
/// and generates `Settings` (each field an `Option`: "not set here"),
/// `Config` (the settings in force), the `SETTINGS` table, and the code that
/// parses, overlays, defaults and writes them back as flags and JSON.
macro_rules! settings {
    ($(
        $heading:literal {$(
            $(#[doc = $doc:literal])+
            $field:ident: $ty:ty = $default:expr, $value_name:literal, [$($sub:ident)+];
        )+}
    )+) => {
        /// Settings as given by one source (the config file, the
        /// environment, the flags); `None` means "not set here".
        #[derive(Clone, Debug, Default)]
        pub struct Settings {$($(
            $(#[doc = $doc])+
            pub $field: Option<$ty>,
        )+)+}

        /// The settings in force: defaults, overlaid by the config file,
        /// the environment and the flags.
        #[derive(Clone, Debug)]
        pub struct Config {
            /// The global arguments that give a worker these same settings:
            /// the config file this was loaded from (`--config`) and every
            /// setting the command line or the environment gave. What
            /// `handle` passes to the worker it starts, so a worker never
            /// takes settings from a job file.
            pub invocation: Vec<std::ffi::OsString>,
            $($(
                $(#[doc = $doc])+
                pub $field: $ty,
            )+)+
        }

        /// Every setting, in the order help lists them.
        pub const SETTINGS: &[Setting] = &[$($(
            Setting {
                key: stringify!($field),
                flag: flag_of!($field),
                heading: $heading,
                doc: concat!($($doc),+).trim_ascii(),
                uses: &[$(stringify!($sub)),+],
                default: || <$ty as Kind>::from_lit($default).show(),
                value_name: $value_name,
                parser: <$ty as Kind>::arg,
            },
        )+)+];

        impl Settings {
            /// `self` with every setting that `over` sets replaced.
            pub fn overlay(self, over: Settings) -> Settings {
                Settings {$($(
                    $field: over.$field.or(self.$field),
                )+)+}
            }

            /// Sets `key` from a config-file value; `false` for an unknown key.
            fn set_json(&mut self, key: &str, v: &serde_json::Value) -> Result<bool> {
                match key {
                    $($(
                        stringify!($field) => self.$field = Some(Kind::from_json(key, v)?),
                    )+)+
                    _ => return Ok(false),
                }
                Ok(true)
            }

            /// The command-line flags that set what `self` sets (and nothing else).
            pub fn to_args(&self) -> Vec<std::ffi::OsString> {
                let mut out = Vec::new();
                $($(
                    if let Some(v) = &self.$field {
                        v.push_args(flag_of!($field), &mut out);
                    }
                )+)+
                out
            }

            /// Every setting with its default where `self` leaves it unset
            /// (not yet checked: see `resolve`).
            fn or_defaults(self) -> Config {
                Config {
                    invocation: Vec::new(),
                    $($(
                        $field: self.$field.unwrap_or_else(|| Kind::from_lit($default)),
                    )+)+
                }
            }

            /// What the arguments of one (sub)command set.
            pub fn from_matches(m: &clap::ArgMatches) -> Settings {
                Settings {$($(
                    $field: Kind::from_matches(m, stringify!($field)),
                )+)+}
            }
        }

        impl Config {
            /// Every setting as a config-file object.
            pub fn to_json(&self) -> serde_json::Value {
                let mut m = serde_json::Map::new();
                $($(
                    m.insert(stringify!($field).into(), self.$field.to_json());
                )+)+
                serde_json::Value::Object(m)
            }
        }
    };
}
