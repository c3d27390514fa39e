"""The index page in a real browser: headless Chromium driven by Selenium.

The checks themselves live in scripts/browser_check.py (which also takes screenshots
for a person to look at); here each one is a test, against one server and one browser
for the module. Skipped where Chromium, chromedriver or selenium is missing.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "browser_check.py"
_spec = importlib.util.spec_from_file_location("browser_check", SCRIPT)
browser_check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(browser_check)

pytestmark = pytest.mark.timeout(240)


def started(kind, folder):
    """A tour of ``kind`` (a browser and its server), closed at the end."""
    why = browser_check.missing_tools()
    if why:
        pytest.skip(why)
    tour = kind(folder)
    try:
        yield tour
    finally:
        tour.close()


@pytest.fixture(scope="module")
def tour(tmp_path_factory):
    yield from started(browser_check.Tour, tmp_path_factory.mktemp("browser"))


def run(tour, check: str, *args) -> None:
    try:
        getattr(tour, check)(*args)
    except browser_check.CheckFailed as failure:
        log = tour.work / "server.log"  # (what the server said meanwhile, to see why)
        said = log.read_text(errors="replace").splitlines()[-40:] if log.exists() else []
        pytest.fail("\n".join([str(failure), "the end of the server's log:", *said]),
                    pytrace=False)


def test_the_listing_sorts_filters_and_hashes(tour):
    run(tour, "check_listing")


def test_a_picked_file_is_uploaded_verified_and_listed(tour):
    run(tour, "check_upload_file")


def test_a_dropped_folder_keeps_its_relative_paths(tour):
    run(tour, "check_drop_folder")


def test_an_upload_interrupted_by_a_reload_resumes_where_it_stopped(tour):
    run(tour, "check_resume_after_reload")


def test_an_upload_survives_a_lost_network(tour):
    run(tour, "check_network_loss")


def test_a_taken_name_is_asked_about_and_each_answer_does_what_it_says(tour):
    run(tour, "check_same_name")


def test_three_files_queue_with_one_line_for_all_and_keep_their_times(tour):
    run(tour, "check_queue")


def test_new_folder_rename_and_delete(tour):
    run(tour, "check_folder_rename_delete")


def test_a_folder_downloads_as_a_zip_with_every_member(tour):
    run(tour, "check_folder_zip")


def test_a_drop_box_page_shows_nothing_and_takes_files(tour):
    run(tour, "check_drop_box")


def test_enter_in_the_filter_searches_below_the_folder(tour):
    run(tour, "check_search")


def test_a_folder_says_how_many_entries_it_holds(tour):
    run(tour, "check_folder_counts")


def test_the_page_answers_on_localhost(tour):
    run(tour, "check_localhost")


def test_screenshots_light_dark_and_phone(tour, tmp_path):
    run(tour, "screenshots", tmp_path)
    for name in ("index-light", "index-dark", "index-phone", "index-phone-dark",
                 "same-name-light", "same-name-dark", "same-name-phone", "queue-light",
                 "queue-dark", "queue-phone"):
        shot = (tmp_path / f"{name}.png").read_bytes()
        assert shot.startswith(b"\x89PNG") and len(shot) > 10_000


# ------------------------------------------------- sharing with people (SharingTour)


@pytest.fixture(scope="module")
def sharing(tmp_path_factory):
    yield from started(browser_check.SharingTour, tmp_path_factory.mktemp("sharing"))


def test_signed_out_a_browser_gets_the_sign_in_page(sharing):
    run(sharing, "check_signin_page")


def test_a_wrong_password_is_said_on_the_page(sharing):
    run(sharing, "check_wrong_password")


def test_sign_in_with_a_password_and_sign_out(sharing):
    run(sharing, "check_sign_in_and_out")


def test_a_user_limited_to_a_folder_reaches_nothing_above_it(sharing):
    run(sharing, "check_folder_scope")


def test_the_share_dialog_makes_a_link_that_opens_signed_out(sharing):
    run(sharing, "check_share_dialog")


def test_links_to_a_folder_and_a_drop_box_and_refused_ones(sharing):
    run(sharing, "check_links")


def test_screenshots_of_the_sign_in_page_and_the_share_dialog(sharing, tmp_path):
    run(sharing, "screenshots", tmp_path)
    for stem in ("signin", "share-dialog"):
        for name in ("light", "dark", "phone"):
            shot = (tmp_path / f"{stem}-{name}.png").read_bytes()
            assert shot.startswith(b"\x89PNG") and len(shot) > 10_000
