"""WebDAV's XML, read and written (RFC 4918, section 14): no I/O, no rule.

Reading: request bodies (PROPFIND, PROPPATCH, LOCK) are parsed by ``defusedxml``,
which refuses a document type declaration, entity expansion and external entities (the
"billion laughs" and file-disclosure attacks), after the codec has capped the body's
size. Namespaces are resolved by the parser: a name is kept in Clark notation,
``{DAV:}getetag``; a prefix declared empty (``xmlns:x=""``, illegal in XML Namespaces
1.0) makes the document malformed.

Writing: every document declares ``DAV:`` once, as the prefix ``D``, and never a
default namespace, so a name in no namespace is written bare. A property in another
namespace declares its own on its element; a dead property's value is kept as its
whole element (``element_xml``), namespaces declared on it, so it can be written back
inside any document unchanged.
"""

from __future__ import annotations

import email.utils
import urllib.parse
import xml.etree.ElementTree as ET
from typing import Any, Iterable
from xml.sax.saxutils import escape

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

DAV = "{DAV:}"
XML_NAMESPACE = "http://www.w3.org/XML/1998/namespace"
XML_HEAD = '<?xml version="1.0" encoding="utf-8"?>\n'
MULTISTATUS_OPEN = XML_HEAD + '<D:multistatus xmlns:D="DAV:">'
MULTISTATUS_CLOSE = "</D:multistatus>\n"

#: The live properties of every entry, as allprop and propname name them.
LIVE = ("resourcetype", "displayname", "getlastmodified", "creationdate",
        "getcontentlength", "getcontenttype", "getetag", "supportedlock", "lockdiscovery")
#: Live properties of folders only (RFC 4331), named but not in allprop.
QUOTA = ("quota-available-bytes", "quota-used-bytes")
PROTECTED = frozenset(DAV + name for name in LIVE + QUOTA)


class BadXml(ValueError):
    """A request body that is not the XML this method takes (400)."""


def parse(body: bytes) -> ET.Element:
    """The root element of ``body``; BadXml if it is not well-formed (namespaces
    included) or uses a DTD or entities."""
    try:
        return SafeET.fromstring(body, forbid_dtd=True)
    except DefusedXmlException:
        raise BadXml("the XML declares a document type or entities, which are refused") \
            from None
    except ET.ParseError as exc:
        raise BadXml(f"the XML is not well-formed: {exc}") from None


def _element(root: ET.Element, name: str) -> ET.Element:
    if root.tag != DAV + name:
        raise BadXml(f"expected a DAV:{name} element, got {clark_to_text(root.tag)}")
    return root


# -- requests


def propfind_request(body: bytes) -> tuple[str, list[str]]:
    """("allprop" | "propname" | "prop", the names asked for). An empty body is
    allprop (RFC 4918, 9.1); allprop's ``include`` adds names."""
    if not body.strip():
        return "allprop", []
    root = _element(parse(body), "propfind")
    for child in root:
        if child.tag == DAV + "propname":
            return "propname", []
        if child.tag == DAV + "allprop":
            included = [p.tag for inc in root if inc.tag == DAV + "include" for p in inc]
            return "allprop", included
        if child.tag == DAV + "prop":
            return "prop", [p.tag for p in child]
    raise BadXml("a propfind holds prop, allprop or propname")


def proppatch_request(body: bytes) -> list[tuple[str, str | None]]:
    """The changes in document order: (name, its element as XML) to set, (name, None)
    to remove."""
    root = _element(parse(body), "propertyupdate")
    changes: list[tuple[str, str | None]] = []
    for action in root:
        if action.tag not in (DAV + "set", DAV + "remove"):
            continue
        for prop in action:
            if prop.tag != DAV + "prop":
                continue
            for item in prop:
                changes.append((item.tag, element_xml(item) if action.tag == DAV + "set"
                                else None))
    if not changes:
        raise BadXml("a propertyupdate sets or removes at least one property")
    return changes


def lock_request(body: bytes) -> tuple[bool, str]:
    """(exclusive, the owner element as XML or "") of a lockinfo."""
    root = _element(parse(body), "lockinfo")
    scope = root.find(DAV + "lockscope")
    kind = root.find(DAV + "locktype")
    if scope is None or len(scope) != 1 or scope[0].tag not in (DAV + "exclusive",
                                                                 DAV + "shared"):
        raise BadXml("a lockinfo says its lockscope: exclusive or shared")
    if kind is None or kind.find(DAV + "write") is None:
        raise BadXml("the only lock type is write")
    owner = root.find(DAV + "owner")
    return scope[0].tag == DAV + "exclusive", element_xml(owner) if owner is not None else ""


def element_xml(element: ET.Element) -> str:
    """``element`` as a self-contained XML fragment: the namespaces it and its
    descendants use are declared on it (prefixes ``ns0``... as ElementTree names them)."""
    element.tail = None
    try:
        return ET.tostring(element, encoding="unicode")
    except RecursionError:  # (ElementTree writes a tree by recursion)
        raise BadXml("the XML is nested too deep") from None


# -- responses


def clark_to_text(name: str) -> str:
    namespace, _, local = name[1:].partition("}") if name.startswith("{") else ("", "", name)
    return f"{namespace}:{local}" if namespace else local


def empty_element(name: str) -> str:
    """``<name/>`` for a property name in Clark notation, its namespace declared."""
    if name.startswith(DAV):
        return f"<D:{name[len(DAV):]}/>"
    if name.startswith("{"):
        namespace, _, local = name[1:].partition("}")
        if namespace == XML_NAMESPACE:  # (bound to "xml" for ever: it may not be declared)
            return f"<xml:{local}/>"
        return f'<X:{local} xmlns:X="{escape(namespace, {chr(34): "&quot;"})}"/>'
    return f"<{name}/>"


def href(name: str, folder: bool) -> str:
    """A name below the served root as an href: an absolute path, percent-encoded."""
    path = "/" + urllib.parse.quote(name)
    return path + "/" if folder and name else path


def http_date(when: float) -> str:
    return email.utils.formatdate(when, usegmt=True)


def iso_date(when: float) -> str:
    import time
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))


def response(href_value: str, found: list[str], missing: Iterable[str] = (),
             other: Iterable[tuple[str, int, str]] = ()) -> str:
    """One ``response`` of a multistatus: the properties found (their XML), those
    missing (404), and any other (name, status, why)."""
    parts = [f"<D:response><D:href>{escape(href_value)}</D:href>"]
    if found:
        parts.append("<D:propstat><D:prop>" + "".join(found)
                     + "</D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat>")
    missing = list(missing)
    if missing:
        parts.append("<D:propstat><D:prop>" + "".join(empty_element(n) for n in missing)
                     + "</D:prop><D:status>HTTP/1.1 404 Not Found</D:status></D:propstat>")
    for name, status, why in other:
        parts.append(f"<D:propstat><D:prop>{empty_element(name)}</D:prop>"
                     f"<D:status>HTTP/1.1 {status} {status_phrase(status)}</D:status>"
                     + (f"<D:responsedescription>{escape(why)}</D:responsedescription>"
                        if why else "") + "</D:propstat>")
    parts.append("</D:response>")
    return "".join(parts)


def status_response(href_value: str, status: int, why: str = "") -> str:
    """A ``response`` that says a status of a whole resource (a member not copied)."""
    return (f"<D:response><D:href>{escape(href_value)}</D:href>"
            f"<D:status>HTTP/1.1 {status} {status_phrase(status)}</D:status>"
            + (f"<D:responsedescription>{escape(why)}</D:responsedescription>" if why else "")
            + "</D:response>")


def status_phrase(status: int) -> str:
    import http
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return ""


def error_body(condition: str) -> bytes:
    """An ``error`` body naming a precondition (RFC 4918, 16)."""
    return (XML_HEAD + f'<D:error xmlns:D="DAV:"><D:{condition}/></D:error>\n').encode()


def lock_xml(lock: Any, href_value: str) -> str:
    """One ``activelock`` (locks.Lock) as lockdiscovery says it."""
    return ("<D:activelock>"
            "<D:locktype><D:write/></D:locktype>"
            f"<D:lockscope><D:{'exclusive' if lock.exclusive else 'shared'}/></D:lockscope>"
            f"<D:depth>{'infinity' if lock.infinite else '0'}</D:depth>"
            + lock.owner
            + f"<D:timeout>Second-{lock.timeout}</D:timeout>"
            f"<D:locktoken><D:href>{escape(lock.token)}</D:href></D:locktoken>"
            f"<D:lockroot><D:href>{escape(href_value)}</D:href></D:lockroot>"
            "</D:activelock>")


def lockdiscovery(locks: list[Any], hrefs: list[str]) -> str:
    return ("<D:lockdiscovery>" + "".join(lock_xml(lock, h) for lock, h in zip(locks, hrefs))
            + "</D:lockdiscovery>")


SUPPORTED_LOCK = ("<D:supportedlock>"
                  "<D:lockentry><D:lockscope><D:exclusive/></D:lockscope>"
                  "<D:locktype><D:write/></D:locktype></D:lockentry>"
                  "<D:lockentry><D:lockscope><D:shared/></D:lockscope>"
                  "<D:locktype><D:write/></D:locktype></D:lockentry>"
                  "</D:supportedlock>")


def lock_reply(lock: Any, href_value: str) -> bytes:
    """The body of a LOCK's answer: the lock, in a prop."""
    return (XML_HEAD + '<D:prop xmlns:D="DAV:">' + lockdiscovery([lock], [href_value])
            + "</D:prop>\n").encode()
