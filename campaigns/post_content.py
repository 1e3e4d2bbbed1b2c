"""A sent Mailchimp campaign's HTML, made fit for the Trading Grid community (flow F1). Pure functions, no I/O.

`clean_campaign_html` parses the email with lxml (libxml2's HTML parser, which copes with the table soup email
builders produce) and removes what only makes sense in someone's inbox:

1. **Merge tags**: conditional blocks are resolved as for a reader with no subscriber data
   (`*|IF:FNAME|*Hi *|FNAME|*,*|ELSE:|*Hi partner,*|END:IF|*` becomes "Hi partner,"; `*|INTERESTED:…|*` blocks
   go); every other `*|TAG|*` (also URL-encoded `*%7CTAG%7C*`) is removed from text and attributes, with the
   space it leaves before punctuation ("Hello *|FNAME|*," becomes "Hello,"). A link whose address was only a
   merge tag keeps its text and loses the link; an image whose source was one goes; a salutation left bare
   ("Dear,") goes.
2. **Tracking pixels**: images of at most 1×1 pixels (attributes or inline style) and open-tracking images
   (Mailchimp's `list-manage.com/track/open`, and the usual `/track/open`, `open.php`, `/wf/open`, `o.gif`…).
3. **Unsubscribe and preference-centre footers**: Mailchimp's footer containers (`#templateFooter`,
   `.footerContainer`, the `#canspamBarWrapper` bar, `<footer>`), and around every unsubscribe, update-profile,
   preferences or forward-to-a-friend link (`*|UNSUB|*`, `*|UPDATE_PROFILE|*`, `list-manage.com/unsubscribe…`,
   or the link's words) and every boilerplate sentence ("Our mailing address is", "You are receiving this email
   because", "All rights reserved"…) the largest enclosing block that is still footer-sized (at most 400
   characters, no heading, at most half of the email's text).
4. **"View this email in your browser"**: the same for links to the archive (`*|ARCHIVE|*`, campaign-archive,
   eepurl) or whose words say so ("view it online", "trouble viewing"…), plus Mailchimp's preheader
   (`#templatePreheader`, `.preheaderContainer`) and hidden preview text (`display:none`, `mso-hide:all`).
5. **Absolute addresses**: relative links, image sources and CSS `url()`s are resolved against the campaign's
   archive URL. Click-tracking redirects (`list-manage.com/track/click`) are unwrapped: they carry a recipient.
6. **Safe for another site**: scripts, event handlers, `javascript:` URLs, `<style>`, `<head>`, forms, frames,
   embeds and comments (Outlook's conditional ones too) go (lxml-html-clean's Cleaner); inline styles stay,
   cleaned. Containers left empty are removed.

`extract_post_content` then reads the summary from the cleaned email itself: the title is its first heading
(`h1`, else `h2`), else the subject; the summary its first paragraphs (greetings and button labels skipped) up to
`SUMMARY_MAX_CHARS`; the key links are its remaining content links, deduplicated (never unsubscribe, tracking,
archive or social-follow links).
"""

from __future__ import annotations

import html as htmllib
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import lxml.html
from lxml import etree
from lxml.html import defs
from lxml_html_clean import Cleaner

SUMMARY_MAX_CHARS = 600
SUMMARY_MAX_PARAGRAPHS = 3
KEY_LINKS_MAX = 5
TITLE_MAX_CHARS = 200
# A block around an unsubscribe link is removed only while it stays this small (characters of text).
FOOTER_BLOCK_MAX_CHARS = 400
# Paragraphs shorter than this are greetings or labels ("Hi partner,"), not a summary.
MIN_PARAGRAPH_CHARS = 25

STYLE_FULL = "full"
STYLE_SUMMARY = "summary"

_TAG = r"\*(?:\||%7C)"
_END = r"(?:\||%7C)\*"
_CONDITIONAL = re.compile(_TAG + r"\s*(IF|IFNOT|ELSEIF|ELSE|END|INTERESTED)\s*:([^|*]{0,200}?)" + _END, re.I)
_MERGE_TAG = re.compile(_TAG + r"[^|*<>]{0,200}?" + _END, re.I)
_MERGE_TAG_NAME = re.compile(_TAG + r"\s*([A-Z0-9_:]+)", re.I)
_SPACE_BEFORE_PUNCTUATION = re.compile(r"[ \t\u00a0]+([,.;:!?])")
_SPACES = re.compile(r"[ \t\u00a0]{2,}")
_DOUBLED_PUNCTUATION = re.compile(r"([,;:])(?:[ \t\u00a0]*\1)+")
_WHITESPACE = re.compile(r"\s+")
# What a salutation is once its merge tags are gone ("Dear *|FNAME|* *|LNAME|*," -> "Dear,"): removed.
_BARE_GREETING = re.compile(r"^(dear|hi|hello|hey|good (morning|afternoon|evening))\s*[,!.:]?$", re.I)

_FOOTER_MARKERS = {"templatefooter", "footercontainer", "canspambarwrapper", "canspambar", "footer"}
_PREHEADER_MARKERS = {"templatepreheader", "preheadercontainer", "mcnpreviewtext"}
_SOCIAL_MARKERS = ("mcnfollow", "mcnshare")
_BLOCK_TAGS = {"p", "div", "td", "th", "li", "center", "table", "footer", "header", "section", "ul", "ol", "tr"}
_HEADINGS = ("h1", "h2", "h3", "h4", "h5", "h6")

# Merge tags that only make sense in an inbox: a link to one of them is footer or preheader material.
_INBOX_ONLY_TAGS = {
    "UNSUB",
    "UPDATE_PROFILE",
    "EMAIL_PREF",
    "FORWARD",
    "ABOUT_LIST",
    "LIST:RECENT",
    "LIST_RECENT",
    "ARCHIVE",
    "ARCHIVE_LINK_SHORT",
    "ARCHIVE_LINK",
    "VCARD",
}
_ARCHIVE_TAGS = {"ARCHIVE", "ARCHIVE_LINK_SHORT", "ARCHIVE_LINK", "LIST:RECENT", "LIST_RECENT"}
_UNSUBSCRIBE_WORDS = re.compile(
    r"\b(unsubscribe|opt[ -]?out|update (your )?(subscription |email )?preferences|manage (your )?(email |"
    r"subscription )?preferences|update (your )?profile|email preferences|preference cent(er|re)|"
    r"forward (this email )?to a friend|add us to your address book)\b",
    re.I,
)
_VIEW_IN_BROWSER_WORDS = re.compile(
    r"\b(view (this |the |it )?(email |message |newsletter |mail )?(in|on) (your |a |the )?(web )?browser|"
    r"view (it |this )?(online|as a web ?page)|open in (your )?browser|trouble viewing|"
    r"not displaying correctly|web version)\b",
    re.I,
)
_BOILERPLATE_WORDS = re.compile(
    r"(our mailing address is|you are receiving this|you're receiving this|you received this (email|message)|"
    r"this email was sent to|why did i get this|all rights reserved)",
    re.I,
)
_TRACKING_SRC = re.compile(
    r"(/track/open|/open\.php|/wf/open|/o\.gif|/e/o/|tracking[-_]?pixel|/pixel\.(gif|png)|/beacon\.)", re.I
)
_LIST_MANAGE = re.compile(r"(^|\.)list-manage\d*\.com$", re.I)
_ARCHIVE_HOSTS = re.compile(r"(^|\.)(campaign-archive\d*\.com|eepurl\.com|mailchi\.mp)$", re.I)
_SIZE_IN_STYLE = re.compile(r"(?<![-\w])(width|height)\s*:\s*(\d+(?:\.\d+)?)\s*(px)?\s*(;|$)", re.I)
_HIDDEN_STYLE = re.compile(r"display\s*:\s*none|mso-hide\s*:\s*all", re.I)

_CLEANER = Cleaner(
    scripts=True,
    javascript=True,
    comments=True,
    style=True,  # <style> blocks: the email's CSS would restyle the community page
    inline_style=False,  # inline styles stay (the layout), with any javascript in them removed
    links=True,
    meta=True,
    page_structure=True,
    processing_instructions=True,
    embedded=True,
    frames=True,
    forms=True,
    annoying_tags=True,
    remove_unknown_tags=True,
    safe_attrs_only=True,
    safe_attrs=frozenset(defs.safe_attrs | {"style", "bgcolor", "background"}),
)


@dataclass(frozen=True)
class KeyLink:
    url: str
    text: str


@dataclass(frozen=True)
class PostContent:
    """What a community post is made of, all from the email itself."""

    title: str
    summary: str  # plain text: the first paragraphs
    paragraphs: tuple[str, ...] = ()
    links: tuple[KeyLink, ...] = ()
    full_html: str = ""
    summary_html: str = ""
    removed: dict[str, int] = field(default_factory=dict)  # what cleaning removed, per rule

    def body_html(self, style: str) -> str:
        return self.full_html if style == STYLE_FULL else self.summary_html


# --- cleaning ---------------------------------------------------------------------------------------------------


def resolve_conditional_merge_tags(text: str) -> str:
    """Resolve `*|IF:…|*`, `*|IFNOT:…|*`, `*|ELSEIF:…|*`, `*|ELSE:|*`, `*|END:IF|*` and `*|INTERESTED:…|*` for a
    reader Mailchimp knows nothing about: IF and INTERESTED are false, IFNOT is true. Unbalanced tags are left to
    the plain merge-tag removal (everything is kept rather than risk dropping content)."""
    out: list[str] = []
    stack: list[dict[str, bool]] = []
    position = 0
    for match in _CONDITIONAL.finditer(text):
        if all(frame["active"] for frame in stack):
            out.append(text[position : match.start()])
        position = match.end()
        kind = match.group(1).upper()
        if kind in ("IF", "INTERESTED"):
            stack.append({"taken": False, "active": False})
        elif kind == "IFNOT":
            stack.append({"taken": True, "active": True})
        elif kind == "ELSEIF":
            if not stack:
                return text
            stack[-1]["active"] = False
        elif kind == "ELSE":
            if not stack:
                return text
            stack[-1]["active"] = not stack[-1]["taken"]
            stack[-1]["taken"] = True
        else:  # END
            if not stack:
                return text
            stack.pop()
    if stack:
        return text
    if all(frame["active"] for frame in stack):
        out.append(text[position:])
    return "".join(out)


def _strip_merge_tags(text: str) -> str:
    stripped = _MERGE_TAG.sub("", text)
    if stripped == text:
        return text
    stripped = _SPACE_BEFORE_PUNCTUATION.sub(r"\1", stripped)
    stripped = _DOUBLED_PUNCTUATION.sub(r"\1", stripped)  # "Thank you, *|FNAME|*, for" -> "Thank you, for"
    return _SPACES.sub(" ", stripped)


def _merge_tag_name(value: str) -> str:
    match = _MERGE_TAG_NAME.match((value or "").strip())
    return match.group(1).upper() if match else ""


def _parse(html: str) -> lxml.html.HtmlElement | None:
    if not html or not html.strip():
        return None
    try:
        return lxml.html.document_fromstring(html)
    except ValueError:  # a str with an XML encoding declaration
        return lxml.html.document_fromstring(html.encode("utf-8"))
    except etree.ParserError:
        return None


def _text(element) -> str:
    return _WHITESPACE.sub(" ", element.text_content() or "").strip()


def _classes_and_id(element) -> set[str]:
    names = set((element.get("class") or "").lower().split())
    if element.get("id"):
        names.add(element.get("id").lower())
    return names


def _drop(element) -> bool:
    if element.getparent() is None:
        return False
    element.drop_tree()  # keeps the tail text
    return True


def _pixel_size(img, dimension: str) -> float | None:
    value = (img.get(dimension) or "").strip().lower().removesuffix("px")
    try:
        return float(value)
    except ValueError:
        pass
    for name, number, _unit, _end in _SIZE_IN_STYLE.findall(img.get("style") or ""):
        if name.lower() == dimension:
            return float(number)
    return None


def _is_tracking_pixel(img) -> bool:
    width, height = _pixel_size(img, "width"), _pixel_size(img, "height")
    if width is not None and height is not None and width <= 1 and height <= 1:
        return True
    src = img.get("src") or ""
    host = urlsplit(src.strip()).hostname or ""
    if _LIST_MANAGE.search(host) and "/track/" in src:
        return True
    return bool(_TRACKING_SRC.search(src))


def _link_kind(anchor, archive_url: str) -> str:
    """"unsubscribe" (footer material), "archive" (view in browser), "tracking" or ""."""
    href = (anchor.get("href") or "").strip()
    tag = _merge_tag_name(href)
    if tag in _ARCHIVE_TAGS:
        return "archive"
    if tag in _INBOX_ONLY_TAGS:
        return "unsubscribe"
    parts = urlsplit(href)
    host = (parts.hostname or "").lower()
    if _LIST_MANAGE.search(host):
        path = parts.path.lower()
        if "/track/click" in path:
            return "tracking"
        return "unsubscribe"  # unsubscribe, profile, about, vcard, forward: all inbox-only pages
    if archive_url and href and href.split("#", 1)[0].rstrip("/") == archive_url.rstrip("/"):
        return "archive"
    words = _text(anchor)
    if _VIEW_IN_BROWSER_WORDS.search(words):
        return "archive"
    if _UNSUBSCRIBE_WORDS.search(words):
        return "unsubscribe"
    return ""


def _footer_sized_block(element, document_chars: int):
    """The largest block around `element` that is still footer-sized, or None."""
    chosen = None
    node = element
    while node is not None and node.tag not in ("body", "html"):
        if node.tag in _BLOCK_TAGS:
            chars = len(_text(node))
            has_heading = any(True for _ in node.iter(*_HEADINGS))
            if chars > FOOTER_BLOCK_MAX_CHARS or has_heading or chars * 2 > document_chars:
                break
            chosen = node
        node = node.getparent()
    return chosen


def _remove_around(element, document_chars: int) -> None:
    block = _footer_sized_block(element, document_chars)
    _drop(block if block is not None else element)


def clean_campaign_html(html: str, *, base_url: str = "") -> str:
    """The email's HTML, cleaned for the community (see the module docstring); "" when there is nothing left."""
    return _clean(html, base_url=base_url)[0]


def _clean(html: str, *, base_url: str) -> tuple[str, lxml.html.HtmlElement | None, dict[str, int]]:
    removed = {"merge_tags": 0, "tracking_pixels": 0, "footers": 0, "view_in_browser": 0, "hidden": 0}
    removed["merge_tags"] = len(_MERGE_TAG.findall(html or ""))
    doc = _parse(resolve_conditional_merge_tags(html or ""))
    if doc is None:
        return "", None, removed
    for bad in doc.xpath("//script|//style|//head|//noscript"):
        _drop(bad)
    etree.strip_elements(doc, etree.Comment, with_tail=False)

    # Hidden preview text, preheaders and footers by Mailchimp's own markers.
    for element in list(doc.iter(etree.Element)):
        if element.getparent() is None and element is not doc:
            continue  # already dropped with an ancestor
        names = _classes_and_id(element)
        if element.tag == "footer" or names & _FOOTER_MARKERS:
            removed["footers"] += _drop(element)
        elif names & _PREHEADER_MARKERS:
            removed["view_in_browser"] += _drop(element)
        elif _HIDDEN_STYLE.search(element.get("style") or ""):
            removed["hidden"] += _drop(element)

    for img in list(doc.iter("img")):
        if _is_tracking_pixel(img):
            removed["tracking_pixels"] += _drop(img)

    document_chars = len(_text(doc))
    for anchor in list(doc.iter("a")):
        if not _attached(anchor, doc):
            continue
        kind = _link_kind(anchor, base_url)
        if kind == "archive":
            _remove_around(anchor, document_chars)
            removed["view_in_browser"] += 1
        elif kind == "unsubscribe":
            _remove_around(anchor, document_chars)
            removed["footers"] += 1
        elif kind == "tracking":
            anchor.drop_tag()
    for element in list(doc.iter(*_BLOCK_TAGS - {"table", "tr", "ul", "ol"})):
        if not _attached(element, doc) or any(child.tag in _BLOCK_TAGS for child in element):
            continue
        if _BOILERPLATE_WORDS.search(_text(element)):
            _remove_around(element, document_chars)
            removed["footers"] += 1

    # Merge tags left in text and attributes.
    for element in doc.iter(etree.Element):
        if element.text:
            element.text = _strip_merge_tags(element.text)
        if element.tail:
            element.tail = _strip_merge_tags(element.tail)
        for name, value in element.attrib.items():
            if "*" in value:
                element.set(name, _strip_merge_tags(value).strip())
    for paragraph in list(doc.iter("p")):
        if _BARE_GREETING.match(_text(paragraph)):
            _drop(paragraph)
    for anchor in list(doc.iter("a")):
        if not (anchor.get("href") or "").strip():
            anchor.drop_tag()
    for img in list(doc.iter("img")):
        if not (img.get("src") or "").strip():
            _drop(img)

    if base_url:
        doc.make_links_absolute(base_url, resolve_base_href=True, handle_failures="discard")
    _CLEANER(doc)
    _remove_empty(doc)
    body = doc.find(".//body")
    root = body if body is not None else doc
    parts = [htmllib.escape(root.text or "")]
    parts += [etree.tostring(child, encoding="unicode", method="html") for child in root]
    return "".join(parts).strip(), doc, removed


def _attached(element, doc) -> bool:
    node = element
    while node is not None:
        if node is doc:
            return True
        node = node.getparent()
    return False


_EMPTY_REMOVABLE = ("p", "div", "span", "center", "a", "strong", "em", "b", "i", "u", "font", "li", "ul", "ol",
                    "table", "tr", "section", "h1", "h2", "h3", "h4", "h5", "h6")


def _remove_empty(doc) -> None:
    """Containers with neither text nor an image left in them (spacers, emptied footers) go."""
    changed = True
    while changed:
        changed = False
        for element in list(doc.iter(*_EMPTY_REMOVABLE)):
            if element.getparent() is None or not _attached(element, doc):
                continue
            if _text(element).strip("\u00a0 ") or next(element.iter("img", "hr", "video", "picture"), None) is not None:
                continue
            changed |= _drop(element)


def sanitize_html(html: str) -> str:
    """Only the safety part of the cleaning (rule 6), for HTML a partner manager edited by hand."""
    if not (html or "").strip():
        return ""
    try:
        wrapper = lxml.html.fragment_fromstring(html, create_parent="div")
    except (etree.ParserError, ValueError):
        return ""
    _CLEANER(wrapper)
    parts = [htmllib.escape(wrapper.text or "")]
    parts += [etree.tostring(child, encoding="unicode", method="html") for child in wrapper]
    return "".join(parts).strip()


# --- the summary -----------------------------------------------------------------------------------------------


def extract_post_content(html: str, *, subject: str = "", archive_url: str = "", plain_text: str = "") -> PostContent:
    """Title, summary, key links and both bodies (full and summary) of a community post, from the email."""
    full_html, doc, removed = _clean(html, base_url=archive_url)
    title = _title(doc, subject)
    paragraphs = _paragraphs(doc, title) if doc is not None else []
    if not paragraphs and plain_text:
        paragraphs = _plain_paragraphs(plain_text, title)
    paragraphs = _fit(paragraphs)
    links = _key_links(doc, archive_url) if doc is not None else []
    summary = "\n\n".join(paragraphs)
    return PostContent(
        title=title,
        summary=summary,
        paragraphs=tuple(paragraphs),
        links=tuple(links),
        full_html=full_html,
        summary_html=summary_html(paragraphs, links, archive_url),
        removed=removed,
    )


def _title(doc, subject: str) -> str:
    if doc is not None:
        for tag in ("h1", "h2"):
            for heading in doc.iter(tag):
                text = _text(heading)
                if len(text) >= 3:
                    return _truncate(text, TITLE_MAX_CHARS)
    return _truncate(_WHITESPACE.sub(" ", _strip_merge_tags(subject or "")).strip(), TITLE_MAX_CHARS)


def _is_link_only(element) -> bool:
    anchors = list(element.iter("a"))
    return bool(anchors) and sum(len(_text(a)) for a in anchors) >= len(_text(element))


def _paragraphs(doc, title: str) -> list[str]:
    found: list[str] = []
    taken: set = set()
    for element in doc.iter("p", "td", "div", "li", "blockquote"):
        if any(ancestor in taken for ancestor in element.iterancestors()):
            continue
        if element.tag != "p" and (
            not (element.text or "").strip() or any(child.tag in _BLOCK_TAGS | set(_HEADINGS) for child in element)
        ):
            continue  # a layout container: its paragraphs are read one by one
        if any(ancestor.tag in _HEADINGS for ancestor in element.iterancestors()):
            continue
        text = _text(element)
        if len(text) < MIN_PARAGRAPH_CHARS or text == title or _is_link_only(element):
            continue
        taken.add(element)
        found.append(text)
        if len(found) >= SUMMARY_MAX_PARAGRAPHS:
            break
    return found


def _plain_paragraphs(plain_text: str, title: str) -> list[str]:
    text = resolve_conditional_merge_tags(plain_text)
    chunks = [_WHITESPACE.sub(" ", _strip_merge_tags(chunk)).strip() for chunk in re.split(r"\n\s*\n", text)]
    chunks = [c for c in chunks if len(c) >= MIN_PARAGRAPH_CHARS and c != title and not _UNSUBSCRIBE_WORDS.search(c)]
    return chunks[:SUMMARY_MAX_PARAGRAPHS]


def _fit(paragraphs: list[str]) -> list[str]:
    """Whole paragraphs while they fit in SUMMARY_MAX_CHARS; the first one is cut at a word if it alone is longer."""
    kept: list[str] = []
    total = 0
    for paragraph in paragraphs:
        if total + len(paragraph) > SUMMARY_MAX_CHARS:
            if not kept:
                kept.append(_truncate(paragraph, SUMMARY_MAX_CHARS))
            break
        kept.append(paragraph)
        total += len(paragraph)
    return kept


def _truncate(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text[: limit - 1].rsplit(" ", 1)[0].rstrip(",;:-–— ")
    return cut + "…"


def _key_links(doc, archive_url: str) -> list[KeyLink]:
    links: list[KeyLink] = []
    seen: set[str] = set()
    for anchor in doc.iter("a"):
        href = (anchor.get("href") or "").strip()
        parts = urlsplit(href)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            continue
        host = parts.hostname.lower()
        if _LIST_MANAGE.search(host) or _is_archive_page(href, archive_url):
            continue
        if any(any(marker in name for marker in _SOCIAL_MARKERS) for a in anchor.iterancestors() for name in
               _classes_and_id(a)):
            continue
        key = href.split("#", 1)[0].rstrip("/")
        if key in seen:
            continue
        text = _text(anchor) or " ".join(img.get("alt", "") for img in anchor.iter("img")).strip() or href
        seen.add(key)
        links.append(KeyLink(url=href, text=_truncate(text, 120)))
        if len(links) >= KEY_LINKS_MAX:
            break
    return links


def _is_archive_page(href: str, archive_url: str) -> bool:
    """The email's own archive page (view in browser), not a document that happens to be resolved against it."""
    if archive_url and href.split("#", 1)[0].rstrip("/") == archive_url.rstrip("/"):
        return True
    parts = urlsplit(href)
    return bool(_ARCHIVE_HOSTS.search(parts.hostname or "")) and parts.path.rstrip("/") in ("", "/home")


def summary_html(paragraphs: list[str] | tuple[str, ...], links, archive_url: str) -> str:
    """The summary as the community shows it: the paragraphs, the key links, and a link to the whole email."""
    parts = [f"<p>{htmllib.escape(paragraph)}</p>" for paragraph in paragraphs]
    if links:
        items = "".join(
            f'<li><a href="{htmllib.escape(link.url)}">{htmllib.escape(link.text)}</a></li>' for link in links
        )
        parts.append(f"<ul>{items}</ul>")
    if archive_url:
        parts.append(f'<p><a href="{htmllib.escape(archive_url)}">Read the full email</a></p>')
    return "\n".join(parts)
