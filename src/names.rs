//! The names of reimage's fieldless enums (phases, results, event kinds),
//! as events, records and messages spell them. Each enum lists its names
//! once, in a [`names!`] table beside it; its `name()`, `from_name()`,
//! `Display` and serde all read that table.

/// Gives a fieldless enum its names, one per variant, written once:
///
/// ```ignore
/// #[derive(Clone, Copy, Serialize, Deserialize)]
/// #[serde(into = "&'static str", try_from = "String")]
/// enum Phase { Load, PostLoad }
/// names!(Phase { Load => "load", PostLoad => "post-load" });
/// ```
///
/// makes `Phase::name(self) -> &'static str` (exhaustive: a new variant
/// without a name does not build), `Phase::from_name(&str) -> Option<Phase>`,
/// `Display`, and the two conversions serde's `into` and `try_from` use (an
/// unknown name is an error that lists the known ones).
macro_rules! names {
    ($ty:ident { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            /// The name in events, records and messages.
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
            type Error = String;

            fn try_from(s: String) -> Result<$ty, String> {
                $ty::from_name(&s).ok_or_else(|| {
                    format!(
                        "unknown {} `{s}`: expected one of {}",
                        stringify!($ty),
                        [$($name),+].join(", ")
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

    #[test]
    fn one_table_names_every_way_round() {
        assert_eq!(Light::AmberBlinking.name(), "amber-blinking");
        assert_eq!(Light::AmberBlinking.to_string(), "amber-blinking");
        assert_eq!(Light::from_name("red"), Some(Light::Red));
        assert_eq!(Light::from_name("Red"), None);
        let json = serde_json::to_string(&[Light::Red, Light::AmberBlinking]).expect("json");
        assert_eq!(json, r#"["red","amber-blinking"]"#);
        let back: Vec<Light> = serde_json::from_str(&json).expect("parses");
        assert_eq!(back, [Light::Red, Light::AmberBlinking]);
        let e = serde_json::from_str::<Light>(r#""green""#).expect_err("unknown");
        assert!(
            e.to_string()
                .contains("unknown Light `green`: expected one of red, amber-blinking"),
            "{e}"
        );
    }
}
