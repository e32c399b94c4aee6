//! Enums whose variants have names in the configuration (a channel kind, a
//! wait kind, a host-key policy): [`named!`] writes each name once, and
//! serde, `name()` and `from_name()` all read it from there.

/// Declares a fieldless enum whose variants are written `Variant =
/// "name",`: serde deserializes each from its name (its messages list
/// them), `name()` gives it back, `from_name()` finds the variant.
macro_rules! named {
    (
        $(#[$meta:meta])*
        $vis:vis enum $enum:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
        $vis enum $enum {
            $( $(#[$vmeta])* #[serde(rename = $text)] $variant, )+
        }

        #[allow(dead_code)]
        impl $enum {
            /// Every variant, in the order declared.
            pub const ALL: &'static [$enum] = &[$($enum::$variant),+];

            /// The name in the configuration.
            pub fn name(self) -> &'static str {
                match self {
                    $($enum::$variant => $text,)+
                }
            }

            /// The variant named `s`.
            pub fn from_name(s: &str) -> Option<$enum> {
                Self::ALL.iter().copied().find(|v| v.name() == s)
            }
        }
    };
}

pub(crate) use named;

#[cfg(test)]
mod tests {
    named! {
        /// A test enum.
        enum Kind {
            /// One.
            One = "one",
            /// Two words.
            TwoWords = "two-words",
        }
    }

    #[derive(Debug, serde::Deserialize)]
    struct T {
        k: Kind,
    }

    #[test]
    fn one_name_each_for_serde_and_back() {
        for k in Kind::ALL {
            assert_eq!(Kind::from_name(k.name()), Some(*k));
            let t: T = toml::from_str(&format!("k = \"{}\"", k.name())).expect("parses");
            assert_eq!(t.k, *k);
        }
        assert_eq!(Kind::TwoWords.name(), "two-words");
        assert_eq!(Kind::from_name("three"), None);
        let e = toml::from_str::<T>("k = \"three\"").expect_err("refused");
        assert!(
            e.message()
                .contains("unknown variant `three`, expected `one` or `two-words`"),
            "{e}"
        );
    }
}
