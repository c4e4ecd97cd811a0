//! Text a key holder chose (file names, nicks, lines), made safe to show
//! or to use as a name: one list of dangerous characters for every place.

/// Control characters (C0, DEL, C1) and the format and separator
/// characters that change how surrounding text is laid out or hide text:
/// soft hyphen, the Arabic letter mark (U+061C), the Mongolian vowel
/// separator (U+180E), zero-width characters and bidi marks
/// (U+200B-U+200F), line and paragraph separators and bidi embeddings and
/// overrides (U+2028-U+202E), word joiner and invisible operators
/// (U+2060-U+2064), bidi isolates and the deprecated format characters
/// (U+2066-U+206F), the byte-order mark, and the interlinear annotation
/// characters (U+FFF9-U+FFFB).
pub fn is_unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00ad}'
                | '\u{061c}'
                | '\u{180e}'
                | '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{206f}'
                | '\u{feff}'
                | '\u{fff9}'..='\u{fffb}'
        )
}

/// `s` with every [`is_unsafe_char`] replaced by U+FFFD, for a terminal:
/// a line cannot move the cursor, rewrite the screen, retitle the window,
/// or reorder itself to look like another sender's.
pub fn printable(s: &str) -> String {
    s.chars()
        .map(|c| if is_unsafe_char(c) { '\u{fffd}' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_character_is_unsafe_and_letters_are_not() {
        for c in [
            '\u{0}', '\u{1b}', '\u{7f}', '\u{85}', '\u{9f}', '\u{ad}', '\u{61c}', '\u{180e}',
            '\u{200b}', '\u{200f}', '\u{2028}', '\u{2029}', '\u{202a}', '\u{202e}', '\u{2060}',
            '\u{2064}', '\u{2066}', '\u{2069}', '\u{206a}', '\u{206f}', '\u{feff}', '\u{fff9}',
            '\u{fffb}',
        ] {
            assert!(is_unsafe_char(c), "{:04x}", c as u32);
            assert_eq!(printable(&c.to_string()), "\u{fffd}");
        }
        for c in ['a', 'é', '中', ' ', '\u{fffc}', '\u{2065}', '\u{a0}', '-'] {
            assert!(!is_unsafe_char(c), "{:04x}", c as u32);
        }
    }
}
