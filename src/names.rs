//! The names of reimage's fieldless enums, as events, records, messages and
//! the configuration spell them (phases, results, event kinds; a channel
//! kind, a wait kind, a host-key policy). Each enum lists its names once,
//! in a [`names!`] table beside it; its `name()`, `from_name()`, `ALL`,
//! `Display` and serde all read that table.

/// Gives a fieldless enum its names, one per variant, written once:
///
/// ```text
/// #[derive(Clone, Copy, Serialize, Deserialize)]
/// #[serde(into = "&'static str", try_from = "String")]
/// enum Phase { Load, PostLoad }
/// names!(Phase { Load => "load", PostLoad => "post-load" });
/// ```
///
/// makes `Phase::name(self) -> &'static str` (exhaustive: a new variant
/// without a name does not build), `Phase::from_name(&str) -> Option<Phase>`,
/// `Phase::ALL` (every variant, in the table's order), `Phase::choices()`
/// ("load or post-load", for messages), `Display`, and the
/// two conversions serde's `into` and `try_from` use. An unknown name is
/// refused in serde's own words for an unknown variant ("unknown variant
/// `x`, expected `a` or `b`"), as a derived `Deserialize` would say it.
macro_rules! names {
    ($ty:ident { $($variant:ident => $name:literal),+ $(,)? }) => {
        #[allow(dead_code)]
        impl $ty {
            /// Every variant, in the order the table names them.
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];

            /// The name in events, records, messages and the configuration.
            pub fn name(self) -> &'static str {
                match self {
                    $($ty::$variant => $name,)+
                }
            }

            /// The variant named `s`.
            pub fn from_name(s: &str) -> Option<$ty> {
                match s {
                    $($name => Some($ty::$variant),)+
                    _ => None,
                }
            }

            /// Every name, for a message: "a, b or c".
            pub fn choices() -> String {
                let names = [$($name),+];
                match names.split_last() {
                    Some((last, rest)) if !rest.is_empty() => {
                        format!("{} or {last}", rest.join(", "))
                    }
                    _ => names.join(""),
                }
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }

        impl From<$ty> for &'static str {
            fn from(v: $ty) -> &'static str {
                v.name()
            }
        }

        impl TryFrom<String> for $ty {
            type Error = serde::de::value::Error;

            fn try_from(s: String) -> Result<$ty, serde::de::value::Error> {
                $ty::from_name(&s).ok_or_else(|| {
                    <serde::de::value::Error as serde::de::Error>::unknown_variant(
                        &s,
                        &[$($name),+],
                    )
                })
            }
        }
    };
}

pub(crate) use names;

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(into = "&'static str", try_from = "String")]
    enum Light {
        Red,
        AmberBlinking,
    }
    names!(Light { Red => "red", AmberBlinking => "amber-blinking" });

    #[derive(Debug, Deserialize)]
    struct T {
        light: Light,
    }

    #[test]
    fn one_table_names_every_way_round() {
        assert_eq!(Light::AmberBlinking.name(), "amber-blinking");
        assert_eq!(Light::AmberBlinking.to_string(), "amber-blinking");
        assert_eq!(Light::from_name("red"), Some(Light::Red));
        assert_eq!(Light::from_name("Red"), None);
        assert_eq!(Light::ALL, [Light::Red, Light::AmberBlinking]);
        assert_eq!(Light::choices(), "red or amber-blinking");
        for l in Light::ALL {
            assert_eq!(Light::from_name(l.name()), Some(*l));
        }
        let json = serde_json::to_string(&[Light::Red, Light::AmberBlinking]).expect("json");
        assert_eq!(json, r#"["red","amber-blinking"]"#);
        let back: Vec<Light> = serde_json::from_str(&json).expect("parses");
        assert_eq!(back, [Light::Red, Light::AmberBlinking]);
        let t: T = toml::from_str("light = \"amber-blinking\"").expect("parses");
        assert_eq!(t.light, Light::AmberBlinking);
    }

    #[test]
    fn an_unknown_name_is_refused_as_serde_refuses_a_variant() {
        let e = serde_json::from_str::<Light>(r#""green""#).expect_err("unknown");
        assert!(
            e.to_string()
                .contains("unknown variant `green`, expected `red` or `amber-blinking`"),
            "{e}"
        );
        let e = toml::from_str::<T>("light = \"green\"").expect_err("unknown");
        assert!(
            e.message()
                .contains("unknown variant `green`, expected `red` or `amber-blinking`"),
            "{e}"
        );
    }
}
