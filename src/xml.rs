//! XML for the SOAP clients (WinRM, vSphere) and other messages reimage
//! writes. Writing: messages are format strings, and every value put into
//! one goes through [`escape`]. Reading: [`parse`] builds a read-only tree
//! with `roxmltree` (well-formedness, namespaces, entities and CDATA done by
//! a maintained parser; DTDs refused, so no entity expansion attacks), and
//! the helpers here find elements by name.
//!
//! A name is either a local name (`"Stream"`: any namespace, any prefix) or
//! a `(namespace, local)` pair (`(NS_SOAP, "Fault")`), as roxmltree's
//! [`ExpandedName`] takes them.

pub use roxmltree::{Document, ExpandedName, Node};

/// Escapes text for XML element content and double-quoted attributes. The
/// one escape function every value written into a message goes through.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 cannot carry other control characters, even escaped.
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// Parses a whole document; an error says what is malformed and where
/// (line:column).
pub fn parse(text: &str) -> Result<Document<'_>, roxmltree::Error> {
    Document::parse(text)
}

/// The first child element of `node` with that name.
pub fn child<'a, 'i, 'n, 'm>(
    node: Node<'a, 'i>,
    name: impl Into<ExpandedName<'n, 'm>>,
) -> Option<Node<'a, 'i>> {
    let name = name.into();
    node.children()
        .find(|c| c.is_element() && c.has_tag_name(name))
}

/// The elements below `node` (not `node` itself) with that name, at any
/// depth, in document order.
pub fn descendants<'a, 'i, 'n, 'm>(
    node: Node<'a, 'i>,
    name: impl Into<ExpandedName<'n, 'm>>,
) -> impl Iterator<Item = Node<'a, 'i>> {
    let name = name.into();
    node.descendants()
        .skip(1)
        .filter(move |c| c.is_element() && c.has_tag_name(name))
}

/// The first element below `node` with that name, at any depth.
pub fn descendant<'a, 'i, 'n, 'm>(
    node: Node<'a, 'i>,
    name: impl Into<ExpandedName<'n, 'm>>,
) -> Option<Node<'a, 'i>> {
    descendants(node, name).next()
}

/// The element reached from `node` by following child names, e.g.
/// `["Body", "Fault", "Reason"]` from the Envelope.
pub fn path<'a, 'i, 'n, 'm>(
    node: Node<'a, 'i>,
    names: &[impl Into<ExpandedName<'n, 'm>> + Copy],
) -> Option<Node<'a, 'i>> {
    names.iter().try_fold(node, |n, &name| child(n, name))
}

/// All text inside `node` (its text and CDATA, and its descendants'),
/// trimmed.
pub fn text(node: Node) -> String {
    let mut out = String::new();
    for t in node.descendants().filter(|n| n.is_text()) {
        out.push_str(t.text().unwrap_or_default());
    }
    out.trim().to_string()
}

/// The trimmed text of the element at `names` below `node`, if there is one.
pub fn path_text<'n, 'm>(
    node: Node,
    names: &[impl Into<ExpandedName<'n, 'm>> + Copy],
) -> Option<String> {
    path(node, names).map(text)
}

/// The part of a qualified name after its prefix: `w:TimedOut` →
/// `TimedOut`. For QName values in text (fault codes), which the parser
/// leaves as written.
pub fn local_name(qname: &str) -> &str {
    qname.rsplit(':').next().unwrap_or(qname)
}

/// A SOAP fault, as SOAP 1.2 (WS-Management) or SOAP 1.1 (vSphere vim25)
/// writes it. Codes are QNames as written (`s:Receiver`, `w:TimedOut`);
/// compare them with [`local_name`].
#[derive(Debug, Clone)]
pub struct SoapFault<'a, 'i> {
    /// 1.2: Code/Value; 1.1: faultcode.
    pub code: String,
    /// 1.2: Code/Subcode/Value, outermost first (nested Subcodes); 1.1: none.
    pub subcodes: Vec<String>,
    /// 1.2: the first Reason/Text; 1.1: faultstring.
    pub reason: String,
    /// 1.2: Detail; 1.1: detail. The application's own fault element is a
    /// child of it.
    pub detail: Option<Node<'a, 'i>>,
}

/// The fault in Envelope/Body/Fault, if the document holds one. Names
/// match in any namespace, so both SOAP versions are read.
pub fn soap_fault<'a, 'i>(doc: &'a Document<'i>) -> Option<SoapFault<'a, 'i>> {
    let envelope = doc.root_element();
    if !envelope.has_tag_name("Envelope") {
        return None;
    }
    let fault = path(envelope, &["Body", "Fault"])?;
    let code = path_text(fault, &["Code", "Value"])
        .or_else(|| path_text(fault, &["faultcode"]))
        .unwrap_or_default();
    let mut subcodes = Vec::new();
    let mut at = child(fault, "Code");
    while let Some(sub) = at.and_then(|c| child(c, "Subcode")) {
        subcodes.push(path_text(sub, &["Value"]).unwrap_or_default());
        at = Some(sub);
    }
    let reason = path_text(fault, &["Reason", "Text"])
        .or_else(|| path_text(fault, &["faultstring"]))
        .unwrap_or_default();
    let detail = child(fault, "Detail").or_else(|| child(fault, "detail"));
    Some(SoapFault {
        code,
        subcodes,
        reason,
        detail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_covers_the_specials_and_control_characters() {
        assert_eq!(escape("a&b<c>d\"e'f"), "a&amp;b&lt;c&gt;d&quot;e&apos;f");
        assert_eq!(escape("plain é 漢"), "plain é 漢");
        assert_eq!(escape("tab\there\r\n"), "tab\there\r\n");
        assert_eq!(escape("nul\u{0}bell\u{7}"), "nul\u{FFFD}bell\u{FFFD}");
        assert_eq!(escape("&amp;"), "&amp;amp;");
    }

    #[test]
    fn escaped_text_reads_back_as_written() {
        for s in ["a&b<c>d\"e'f", "&amp;", "x ; & y", "é&#1;", "]]>"] {
            let doc = format!("<a v=\"{}\" w='{}'>{}</a>", escape(s), escape(s), escape(s));
            let doc = parse(&doc).expect("parses");
            let a = doc.root_element();
            assert_eq!(a.attribute("v"), Some(s));
            assert_eq!(a.attribute("w"), Some(s));
            assert_eq!(text(a), s);
        }
    }

    const MESSAGE: &str = r#"<?xml version="1.0"?><!-- c --><s:Envelope xmlns:s="urn:s" xmlns:w="urn:w"><s:Body>
        <x:ResourceCreated xmlns:x="urn:x"><w:SelectorSet>
        <w:Selector Name='Other'>no</w:Selector>
        <w:Selector Name="ShellId" >AB-12&amp;&#65;<![CDATA[<c>]]></w:Selector></w:SelectorSet></x:ResourceCreated>
        <Shell><ShellId> plain </ShellId><Empty a="1>2"/><w:ShellId>w</w:ShellId></Shell>
        </s:Body></s:Envelope>"#;

    #[test]
    fn elements_are_found_by_local_name_or_namespace() {
        let doc = parse(MESSAGE).expect("parses");
        let env = doc.root_element();
        let sel: Vec<_> = descendants(env, "Selector").collect();
        assert_eq!(sel.len(), 2);
        assert_eq!(sel[1].attribute("Name"), Some("ShellId"));
        assert_eq!(text(sel[1]), "AB-12&A<c>");
        // Local name: any namespace; a pair: that namespace only.
        assert_eq!(
            descendant(env, "ShellId").map(text).as_deref(),
            Some("plain")
        );
        assert_eq!(
            descendant(env, ("urn:w", "ShellId")).map(text).as_deref(),
            Some("w")
        );
        assert!(descendant(env, ("urn:other", "ShellId")).is_none());
        assert!(child(env, ("urn:s", "Body")).is_some());
        assert!(child(env, "Shell").is_none(), "child looks one level down");
        assert_eq!(
            path_text(env, &["Body", "Shell", "ShellId"]).as_deref(),
            Some("plain")
        );
        assert!(path(env, &["Body", "Missing"]).is_none());
        let empty = descendant(env, "Empty").expect("empty");
        assert_eq!(
            (empty.attribute("a"), text(empty).as_str()),
            (Some("1>2"), "")
        );
        assert!(
            descendant(env, "Envelope").is_none(),
            "node itself excluded"
        );
    }

    #[test]
    fn malformed_documents_and_dtds_are_refused() {
        assert!(parse("<a><b>unclosed</a>").is_err());
        assert!(parse("<p:a/>").is_err(), "undeclared prefix");
        assert!(parse("oops").is_err());
        let bomb = r#"<?xml version="1.0"?><!DOCTYPE a [<!ENTITY e "x">]><a>&e;</a>"#;
        assert!(parse(bomb).is_err());
    }

    #[test]
    fn soap_1_2_faults_are_read() {
        let xml = r#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body><s:Fault>
            <s:Code><s:Value>s:Receiver</s:Value><s:Subcode><s:Value>w:TimedOut</s:Value>
            <s:Subcode><s:Value>x:Deeper</s:Value></s:Subcode></s:Subcode></s:Code>
            <s:Reason><s:Text xml:lang="en-US"> The operation timed out. </s:Text><s:Text xml:lang="de">x</s:Text></s:Reason>
            <s:Detail><f:WSManFault xmlns:f="urn:f" Code="2150858793"/></s:Detail>
            </s:Fault></s:Body></s:Envelope>"#;
        let doc = parse(xml).expect("parses");
        let f = soap_fault(&doc).expect("fault");
        assert_eq!(f.code, "s:Receiver");
        assert_eq!(f.subcodes, ["w:TimedOut", "x:Deeper"]);
        assert_eq!(local_name(&f.subcodes[0]), "TimedOut");
        assert_eq!(f.reason, "The operation timed out.");
        let detail = f.detail.expect("detail");
        assert_eq!(
            child(detail, ("urn:f", "WSManFault")).and_then(|w| w.attribute("Code")),
            Some("2150858793")
        );
    }

    #[test]
    fn soap_1_1_faults_are_read() {
        let xml = r#"<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"
            xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><soapenv:Fault>
            <faultcode>ServerFaultCode</faultcode><faultstring>Cannot complete login due to an incorrect user name or password.</faultstring>
            <detail><InvalidLoginFault xmlns="urn:vim25" xsi:type="InvalidLogin"/></detail>
            </soapenv:Fault></soapenv:Body></soapenv:Envelope>"#;
        let doc = parse(xml).expect("parses");
        let f = soap_fault(&doc).expect("fault");
        assert_eq!(f.code, "ServerFaultCode");
        assert!(f.subcodes.is_empty());
        assert!(
            f.reason.starts_with("Cannot complete login"),
            "{}",
            f.reason
        );
        let kind = f
            .detail
            .and_then(|d| child(d, ("urn:vim25", "InvalidLoginFault")));
        assert!(kind.is_some());
    }

    #[test]
    fn no_fault_without_an_envelope_body_fault() {
        for xml in [
            "<html><body>oops</body></html>",
            "<s:Envelope xmlns:s='urn:s'><s:Body><r/></s:Body></s:Envelope>",
            "<Fault/>",
        ] {
            let doc = parse(xml).expect("parses");
            assert!(soap_fault(&doc).is_none(), "{xml}");
        }
    }
}
