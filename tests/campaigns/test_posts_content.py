"""Cleaning a sent Mailchimp campaign for the Trading Grid community, rule by rule, on realistic Mailchimp HTML
(a classic drag-and-drop template and a custom-coded email, in tests/campaigns/mailchimp_html/), and the summary
read from the email itself."""

from pathlib import Path

import lxml.html
import pytest

from campaigns.post_content import (
    SUMMARY_MAX_CHARS,
    clean_campaign_html,
    extract_post_content,
    resolve_conditional_merge_tags,
    sanitize_html,
)

HTML_DIR = Path(__file__).parent / "mailchimp_html"
ARCHIVE = "https://us21.campaign-archive.com/?u=0e1d2c3b4a5f&id=0a1b2c3d4e"


def email(name: str) -> str:
    return (HTML_DIR / f"{name}.html").read_text()


@pytest.fixture(scope="module")
def newsletter():
    return extract_post_content(email("newsletter_template"), subject="Partner news: Q3", archive_url=ARCHIVE)


@pytest.fixture(scope="module")
def policy():
    return extract_post_content(email("policy_custom_code"), subject="New trading terms", archive_url=ARCHIVE)


def tree(html: str):
    return lxml.html.fragment_fromstring(html, create_parent="div")


# --- merge tags -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("content", ["newsletter", "policy"])
def test_no_merge_tag_survives_in_text_or_attributes(content, request):
    post = request.getfixturevalue(content)
    for html in (post.full_html, post.summary_html):
        assert "*|" not in html and "|*" not in html and "%7C" not in html.upper()
    assert "*|" not in post.summary and "*|" not in post.title


def test_conditional_merge_tags_read_as_for_a_reader_mailchimp_knows_nothing_about(newsletter):
    assert "<p>Hi partner,</p>" in newsletter.full_html  # the ELSE branch of *|IF:FNAME|*
    assert "Hi ," not in newsletter.full_html


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("*|IF:FNAME|*Hi *|FNAME|*,*|ELSE:|*Hi partner,*|END:IF|*", "Hi partner,"),
        ("a*|IF:REWARDS|* *|HTML:REWARDS|* *|END:IF|*b", "ab"),
        ("a*|IFNOT:ARCHIVE_PAGE|*kept*|END:IF|*b", "akeptb"),
        ("*|IF:A|*1*|ELSEIF:B|*2*|ELSE:|*3*|END:IF|*", "3"),
        ("*|IF:A|*x*|IF:B|*y*|END:IF|**|ELSE:|*z*|END:IF|*", "z"),
        ("*|INTERESTED:Topics:EDI|*edi only*|END:INTERESTED|*all", "all"),
        ("unbalanced *|IF:FNAME|* stays", "unbalanced *|IF:FNAME|* stays"),
        ("*%7CIF:FNAME%7C*Hi*%7CEND:IF%7C*", ""),
    ],
)
def test_conditional_blocks(text, expected):
    assert resolve_conditional_merge_tags(text) == expected


def test_a_merge_tag_leaves_no_stray_space_or_doubled_comma():
    html = clean_campaign_html("<p>Thank you, *|FNAME|*, for joining *|LIST:COMPANY|*.</p>")
    assert html == "<p>Thank you, for joining.</p>"


def test_a_salutation_left_bare_goes(policy):
    assert "Dear" not in policy.full_html  # "Dear *|FNAME|* *|LNAME|*," has nothing left to say


def test_a_link_to_a_merge_tag_keeps_its_words_an_image_from_one_goes():
    html = clean_campaign_html('<p>See <a href="*|FILE_URL|*">the file</a> <img src="*|BRAND_LOGO|*"> now.</p>')
    fragment = tree(html)
    assert " ".join(fragment.text_content().split()) == "See the file now."
    assert fragment.find(".//a") is None and fragment.find(".//img") is None


# --- tracking pixels -------------------------------------------------------------------------------------------


def test_mailchimp_open_tracking_image_is_removed(newsletter):
    assert "track/open" not in newsletter.full_html
    assert newsletter.removed["tracking_pixels"] == 1


def test_one_pixel_images_by_attribute_or_style_and_known_trackers_are_removed():
    html = clean_campaign_html(
        '<p>Text</p><img src="https://x.example/a.gif" width="1" height="1">'
        '<img src="https://x.example/b.gif" style="width:1px;height:1px;border:0">'
        '<img src="https://x.example/c.gif" width="0" height="0">'
        '<img src="https://sendgrid.example/wf/open?upn=abc">'
        '<img src="https://x.example/logo.png" width="120" height="40" alt="Logo">'
    )
    images = tree(html).findall(".//img")
    assert [img.get("alt") for img in images] == ["Logo"]


def test_custom_code_tracker_with_inline_size_is_removed(policy):
    assert "wf/open" not in policy.full_html
    assert "signature.png" in policy.full_html  # a real image stays


# --- footers ------------------------------------------------------------------------------------------------------


def test_template_footer_with_unsubscribe_preferences_and_address_is_removed(newsletter):
    html = newsletter.full_html.lower()
    for words in ("unsubscribe", "update your preferences", "mailing address", "all rights reserved", "copyright"):
        assert words not in html
    assert "templatefooter" not in html


def test_custom_code_footer_links_and_boilerplate_are_removed(policy):
    html = policy.full_html.lower()
    assert "unsubscribe" not in html and "manage preferences" not in html and "list-manage.com/profile" not in html
    assert "you are receiving this email because" not in html


def test_only_the_footer_sized_block_around_an_unsubscribe_link_goes():
    long_story = "Partners shipping to the new Rotterdam hub must send ASNs two hours before arrival. " * 6
    html = clean_campaign_html(
        f'<div><h2>Hub news</h2><p>{long_story}</p><p>Questions? Reply to this email.</p>'
        '<p><a href="*|UNSUB|*">Unsubscribe</a> · <a href="*|UPDATE_PROFILE|*">Update your preferences</a></p></div>'
    )
    assert "Rotterdam hub" in html and "Questions?" in html and "Hub news" in html
    assert "Unsubscribe" not in html and "preferences" not in html


def test_a_short_email_is_not_swallowed_with_its_footer():
    html = clean_campaign_html('<div><p>Short news.</p><p><a href="*|UNSUB|*">Unsubscribe</a></p></div>')
    assert html == "<div><p>Short news.</p></div>"


# --- view in browser ----------------------------------------------------------------------------------------------


def test_view_this_email_in_your_browser_preheader_is_removed(newsletter):
    assert "browser" not in newsletter.full_html.lower()
    assert "templatepreheader" not in newsletter.full_html.lower()
    assert "MC_PREVIEW_TEXT" not in newsletter.full_html


def test_view_it_in_your_browser_sentence_with_a_literal_archive_link_is_removed(policy):
    assert "displaying correctly" not in policy.full_html.lower()
    assert "campaign-archive.com/?u=" not in policy.full_html


@pytest.mark.parametrize(
    "link",
    [
        '<a href="*|ARCHIVE|*">Read online</a>',
        f'<a href="{ARCHIVE}">here</a>',
        '<a href="https://example.com/web">View this email in your browser</a>',
        '<a href="https://example.com/web">Having trouble viewing this email?</a>',
    ],
)
def test_view_in_browser_links_by_address_or_words(link):
    story = "The EDI certification programme opens for all carriers in the EMEA region next week. " * 2
    html = clean_campaign_html(f"<table><tr><td>{link}</td></tr><tr><td><p>{story}</p></td></tr></table>",
                               base_url=ARCHIVE)
    assert "EDI certification" in html
    assert "<a" not in html


def test_hidden_preview_text_is_removed():
    html = clean_campaign_html('<span style="display:none; mso-hide:all">Preview *|MC_PREVIEW_TEXT|*</span><p>Body</p>')
    assert html == "<p>Body</p>"


# --- absolute addresses, safety -----------------------------------------------------------------------------------


def test_relative_links_and_images_become_absolute_against_the_archive_url(newsletter, policy):
    assert 'src="https://us21.campaign-archive.com/images/header-logo.png"' in newsletter.full_html
    assert 'href="https://us21.campaign-archive.com/events/edi-onboarding"' in newsletter.full_html
    assert 'src="https://us21.campaign-archive.com/img/signature.png"' in policy.full_html
    for post in (newsletter, policy):
        for element in tree(post.full_html).iter("a", "img"):
            address = element.get("href") or element.get("src")
            assert address.startswith(("https://", "mailto:")), address


def test_absolute_links_are_left_alone_and_css_urls_are_resolved():
    html = clean_campaign_html(
        '<td style="background-image:url(\'img/bg.png\')"><a href="https://partner.example/x">x</a></td>',
        base_url="https://us21.campaign-archive.com/?u=1&id=2",
    )
    assert "https://us21.campaign-archive.com/img/bg.png" in html
    assert 'href="https://partner.example/x"' in html


def test_click_tracking_redirects_are_unwrapped(policy):
    assert "track/click" not in policy.full_html
    assert "Track this click" in policy.full_html


def test_scripts_styles_head_comments_and_handlers_never_reach_the_community(newsletter, policy):
    for post in (newsletter, policy):
        html = post.full_html.lower()
        for thing in ("<script", "<style", "<head", "<title", "<meta", "<!--", "[if mso", "onclick", "javascript:"):
            assert thing not in html


def test_sanitize_html_keeps_formatting_and_removes_what_could_run():
    html = sanitize_html(
        '<p onclick="x()" style="color:red">Hi <b>there</b></p><script>alert(1)</script>'
        '<iframe src="https://x.example"></iframe><a href="javascript:alert(1)">x</a><form><input></form>'
    )
    assert html.startswith('<p style="color:red">Hi <b>there</b></p>')
    assert "script" not in html and "iframe" not in html and "javascript" not in html and "input" not in html


def test_nothing_to_clean_gives_nothing():
    assert clean_campaign_html("") == ""
    assert clean_campaign_html("   ") == ""
    assert extract_post_content("", subject="Subject only").title == "Subject only"


# --- the summary, from the email itself ---------------------------------------------------------------------------


def test_title_is_the_first_heading(newsletter, policy):
    assert newsletter.title == "Partner news: Q3 highlights"
    assert policy.title == "Updated trading terms take effect on 1 January"  # an h2 when there is no h1


def test_title_falls_back_to_the_subject_without_a_heading():
    content = extract_post_content("<p>Just a paragraph that is long enough to count.</p>", subject="Hello *|FNAME|*")
    assert content.title == "Hello"


def test_summary_is_the_first_paragraphs_of_the_email_not_greetings(newsletter):
    assert newsletter.paragraphs[0].startswith("This quarter 42 new suppliers joined")
    assert "Thank you, for helping us get there." in newsletter.paragraphs[0]
    assert newsletter.paragraphs[1].startswith("From 1 October, invoices must reference")
    assert "Hi partner" not in newsletter.summary
    assert len(newsletter.summary) <= SUMMARY_MAX_CHARS + 10


def test_summary_keeps_to_its_length_cutting_a_long_first_paragraph_at_a_word():
    words = "Every carrier must confirm the new pickup windows in the community portal before Friday " * 20
    content = extract_post_content(f"<h1>Pickup windows</h1><p>{words}</p><p>Second paragraph here, not used.</p>")
    assert len(content.summary) <= SUMMARY_MAX_CHARS
    assert content.summary.endswith("…") and "Second" not in content.summary
    assert content.summary[:-1].split()[-1] in words.split()


def test_key_links_are_content_links_never_unsubscribe_tracking_archive_or_social(newsletter, policy):
    assert [link.url for link in newsletter.links] == [
        "https://community.partnerlink.example/guides/invoicing",  # the #agenda link is the same page
        "https://us21.campaign-archive.com/events/edi-onboarding",
        "https://community.partnerlink.example/posts/q3",
    ]
    assert [link.text for link in newsletter.links] == ["updated invoicing guide", "register here", "Open the community"]
    assert [link.url for link in policy.links] == ["https://us21.campaign-archive.com/docs/trading-terms-2026.pdf"]


def test_summary_html_has_the_paragraphs_the_key_links_and_the_way_to_the_whole_email(newsletter):
    html = newsletter.summary_html
    fragment = tree(html)
    assert [p.text_content() for p in fragment.findall("p")][:3] == list(newsletter.paragraphs)
    assert [a.get("href") for a in fragment.findall(".//li/a")] == [link.url for link in newsletter.links]
    assert fragment.findall("p")[-1].find("a").get("href") == ARCHIVE
    assert newsletter.body_html("summary") == html and newsletter.body_html("full") == newsletter.full_html


def test_plain_text_is_the_summary_when_the_html_has_no_paragraphs():
    content = extract_post_content(
        "<table><tr><td><img src='https://x.example/banner.png' alt='Banner'></td></tr></table>",
        subject="Banner only",
        plain_text="Banner only\n\nOur warehouse in Lyon closes for inventory on 3 and 4 March.\n\nUnsubscribe: *|UNSUB|*",
    )
    assert content.summary == "Our warehouse in Lyon closes for inventory on 3 and 4 March."
