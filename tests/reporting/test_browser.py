"""What a person sees, checked in a real browser: Debian's Chromium, headless, driven by Selenium.

1. visdom's live page: a real visdom server on 127.0.0.1 fed by a few tiny train.py steps; the page must
   draw one Plotly plot per loss group holding exactly the logged points, and the sample-grid image.
2. The run report: index.html of a tiny trained, tested and CRF-refined run, opened from disk (file://):
   the summary and per-image tables, every thumbnail loaded, header clicks re-sort, nothing fetched
   from anywhere but the run folder. At a laptop's width (1366 px) the page opens on its legend, and the
   choices made on val fit the width as a short table with the full ranking folded away.

Screenshots go to test-artifacts/ (gitignored). The browser is /usr/bin/chromium with /usr/bin/chromedriver
(Debian packages chromium and chromium-driver; .ci/run installs them); Selenium Manager is never run,
so nothing is downloaded. Without those two programs the module is skipped, saying so.
"""
import base64
import csv
import json
import math
import os
import shutil
import urllib.parse

import pytest
import torch

CHROMIUM = '/usr/bin/chromium'
CHROMEDRIVER = '/usr/bin/chromedriver'
_missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
if _missing:
    pytest.skip(f'browser tests need {" and ".join(_missing)} (Debian packages chromium and chromium-driver, '
                'installed by .ci/run: apt-get install chromium chromium-driver)', allow_module_level=True)

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.selenium_manager import SeleniumManager
from selenium.webdriver.support.ui import WebDriverWait

import crf
import train
from models.cltnet_model import CLTNetModel
from reporting.html import write_run_report
from reporting.visualizer import Visualizer
from conftest import REPO_ROOT, test_script, traces, wait_until
from fake_run import make_fake_run

# visdom 0.2.4 itself calls the deprecated logger.warn.
pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.filterwarnings('ignore:The .warn. method is deprecated:DeprecationWarning')]

ARTIFACTS = os.path.join(REPO_ROOT, 'test-artifacts')
# This machine's network is closed: without the background-networking flags Chromium keeps trying to
# reach Google's hosts; --disable-dev-shm-usage avoids crashes where /dev/shm is small (containers).
CHROMIUM_FLAGS = ('--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
                  '--disable-background-networking', '--disable-component-update', '--disable-sync',
                  '--disable-dev-shm-usage', '--window-size=1400,1000')
WAIT_S = 60  # generous: the 2 CPU cores may be shared with trainings
LAPTOP = (1366, 768)  # the most common laptop screen


@pytest.fixture(scope='module')
def browser(tmp_path_factory):
    """One headless Chromium for the whole module, with its console log kept; quits at the end."""
    os.makedirs(ARTIFACTS, exist_ok=True)
    profile = tmp_path_factory.mktemp('chromium-profile')  # a new, empty profile each run
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f'--user-data-dir={profile}')
    # The console (failed loads, script errors) and the DevTools network events (every request made).
    options.set_capability('goog:loggingPrefs', {'browser': 'ALL', 'performance': 'ALL'})

    def no_selenium_manager(*args, **kwargs):
        raise AssertionError('Selenium Manager would download a driver or browser; use the system ones')
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv('SE_OFFLINE', 'true')  # belt and braces: Selenium Manager's own offline switch
        patch.setattr(SeleniumManager, 'binary_paths', no_selenium_manager)
        service = Service(CHROMEDRIVER, log_output=str(profile / 'chromedriver.log'))
        driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver, script, *args, timeout_s=WAIT_S, message=''):
    """Run the JS `script` (a function body returning a value) until it returns something truthy."""
    return WebDriverWait(driver, timeout_s, poll_frequency=0.2).until(
        lambda d: d.execute_script(script, *args), message)


def console_errors(driver):
    """SEVERE browser console entries since the last call (failed loads, script errors)."""
    return [entry['message'] for entry in driver.get_log('browser') if entry['level'] == 'SEVERE']


def requested_urls(driver):
    """URLs of every request the browser sent since the last call (DevTools Network events)."""
    urls = []
    for entry in driver.get_log('performance'):
        message = json.loads(entry['message'])['message']
        if message['method'] == 'Network.requestWillBeSent':
            urls.append(message['params']['request']['url'])
    return urls


def full_page_screenshot(driver, name):
    """Save the whole page (not only the window) as test-artifacts/<name>; returns the path."""
    size = driver.execute_script('return [document.documentElement.scrollWidth, '
                                 'document.documentElement.scrollHeight]')
    shot = driver.execute_cdp_cmd('Page.captureScreenshot', {
        'format': 'png', 'captureBeyondViewport': True,
        'clip': {'x': 0, 'y': 0, 'width': size[0], 'height': min(size[1], 6000), 'scale': 1}})
    path = os.path.join(ARTIFACTS, name)
    with open(path, 'wb') as handle:
        handle.write(base64.b64decode(shot['data']))
    return path


def read_loss_log(folder):
    with open(os.path.join(folder, 'loss_log.csv'), newline='') as handle:
        rows = list(csv.reader(handle))
    return {name: [float(row[i]) for row in rows[1:]] for i, name in enumerate(rows[0]) if i}


# Every Plotly plot on the page: its title, and each trace's name, points and drawn SVG path.
PLOTS_JS = """
return Array.from(document.querySelectorAll('.js-plotly-plot')).map(function (plot) {
  var title = plot.layout && plot.layout.title;
  return {
    title: title && (title.text !== undefined ? title.text : title),
    traces: (plot.data || []).map(function (trace) {
      return {name: trace.name, x: Array.from(trace.x || []), y: Array.from(trace.y || [])};
    }),
    drawn: Array.from(plot.querySelectorAll('.scatterlayer .trace')).map(function (trace) {
      var line = trace.querySelector('path.js-line');
      return line ? line.getAttribute('d') || '' : '';
    })
  };
});
"""


def test_visdom_page_draws_the_live_loss_plots_and_sample_grid(browser, tiny_argv, run_folder, visdom_server):
    import visdom
    static = os.path.join(os.path.dirname(visdom.__file__), 'static')
    for name in ('js/main.js', 'js/plotly-plotly.min.js', 'js/react-dom.min.js', 'js/jquery.min.js'):
        if not os.path.getsize(os.path.join(static, name)):
            pytest.fail(f'visdom front-end file {name} is an empty placeholder: the page cannot render; run '
                        'bash tools/install_visdom_assets.sh where the npm registry can be reached')
    env, steps = 'browser_test', 3
    assert train.main(tiny_argv('--iteration', steps, '--display_id', 1, '--display_server', 'http://127.0.0.1',
                                '--display_port', visdom_server.port, '--display_env', env,
                                '--display_freq', 1, '--print_freq', 1)) == 0
    logged = read_loss_log(run_folder())
    groups = CLTNetModel.loss_groups
    last = list(groups)[-1]
    assert wait_until(lambda: len(traces(visdom_server, last, env).get(groups[last][-1], ([],))[0]) == steps)
    assert wait_until(lambda: visdom_server.window(Visualizer.image_window, env))
    console_errors(browser), requested_urls(browser)  # start both logs afresh

    browser.get(f'http://127.0.0.1:{visdom_server.port}/env/{urllib.parse.quote(env)}')
    # React builds the panes after the page loads, Plotly draws into them: wait for every group's plot
    # with all its traces drawn, and for the sample grid to be decoded.
    wait_for(browser, 'var plots = document.querySelectorAll(".js-plotly-plot");'
                      'return plots.length >= arguments[0] && Array.from(plots).every(function (p) {'
                      '  return p.querySelectorAll(".scatterlayer .trace").length > 0; });', len(groups),
             message='the loss plots were not drawn')
    image = wait_for(browser, 'var img = document.querySelector("img.content-image");'
                              'return img && img.complete && img.naturalWidth > 0 ? '
                              '  [img.naturalWidth, img.naturalHeight, img.clientWidth] : null;',
                     message='the sample grid image did not load')
    shot = full_page_screenshot(browser, 'visdom_live.png')

    plots = {plot['title']: plot for plot in browser.execute_script(PLOTS_JS)}
    assert sorted(plots) == sorted(groups), 'one plot per loss group, titled by the group'
    for group, names in groups.items():
        plot = plots[group]
        assert [trace['name'] for trace in plot['traces']] == names, group
        for trace in plot['traces']:
            assert trace['x'] == [float(s) for s in range(1, steps + 1)], (group, trace['name'])
            assert trace['y'] == pytest.approx(logged[trace['name']], rel=1e-6), (group, trace['name'])
        # Each trace is drawn: an SVG line through the points (a path with a move and line segments).
        assert len(plot['drawn']) == len(names), group
        assert all(d.startswith('M') and 'L' in d for d in plot['drawn']), (group, plot['drawn'])

    tiles = len(CLTNetModel.visual_names)
    assert image[:2] == [tiles * (32 + 4), 32 + 4]  # the grid train.py sent: 6 tiles of 32 px + padding
    assert image[2] > 0  # laid out in its pane (whether all of it shows: the next test)
    assert os.path.getsize(shot) > 10_000
    # Offline for real: every request went to this visdom server (data: URLs are the inlined images).
    origin = f'http://127.0.0.1:{visdom_server.port}/'
    outside = [url for url in requested_urls(browser) if not url.startswith((origin, 'data:', 'blob:'))]
    assert not outside, outside
    # Nothing failed to load or threw (but a favicon.png, which visdom's page names and does not ship).
    errors = [e for e in console_errors(browser) if 'favicon' not in e]
    assert not errors, errors


# Where the sample grid is drawn, where its pane is, and what a person sees at its centre and 3 px above
# its bottom edge (the image itself when it is not covered or cut off by the pane).
GRID_JS = """
var img = document.querySelector('img.content-image');
if (!img || !img.complete || !img.naturalWidth) return null;
var r = img.getBoundingClientRect(), pane = img.closest('.react-grid-item').getBoundingClientRect();
var seen = function (y) { var e = document.elementFromPoint(r.x + r.width / 2, y); return e === img; };
return {natural: [img.naturalWidth, img.naturalHeight], img: [r.top, r.bottom], pane: [pane.top, pane.bottom],
        centre_seen: seen(r.top + r.height / 2), bottom_seen: seen(r.bottom - 3)};
"""


def test_visdom_sample_grid_is_fully_visible_at_demo_size(browser, visdom_server, tmp_path):
    env, px = 'grid_test', 64  # start_train.sh's demo trains at 64 px
    vis = Visualizer(str(tmp_path / 'run'), server='http://127.0.0.1', port=visdom_server.port, env=env)
    vis.display_images(1, {name: torch.rand(1, 3, px, px) * 2 - 1 for name in CLTNetModel.visual_names})
    vis.close()
    assert wait_until(lambda: visdom_server.window(Visualizer.image_window, env))
    browser.get(f'http://127.0.0.1:{visdom_server.port}/env/{env}')
    grid = wait_for(browser, GRID_JS, message='the sample grid image did not load')
    full_page_screenshot(browser, 'visdom_grid_64px.png')
    assert grid['natural'] == [len(CLTNetModel.visual_names) * (px + 4), px + 4]
    assert grid['centre_seen'] and grid['bottom_seen'], grid
    assert grid['pane'][0] <= grid['img'][0] and grid['img'][1] <= grid['pane'][1] + 1, grid


# Every <img> on the page, after it had its chance to load (lazy ones are scrolled into view first).
IMAGES_JS = """
return Array.from(document.images).map(function (img) {
  return {src: img.getAttribute('src'), complete: img.complete, width: img.naturalWidth,
          shown: img.clientWidth};
});
"""
TABLE_JS = """
var table = arguments[0], col = arguments[1];
return Array.from(table.tBodies[0].rows).map(function (row) {
  return [row.cells[0].dataset.v, row.cells[col].dataset.v];
});
"""


def _column(table, title):
    headers = [th.text.strip() for th in table.find_elements(By.CSS_SELECTOR, 'thead th')]
    return headers.index(title)


def _keys(values):
    """data-v strings -> floats, blank as NaN (sorted last by the page)."""
    return [float(v) if v else math.nan for v in values]


def test_run_report_opens_from_disk_with_tables_images_and_sorting(browser, tiny_argv, tiny_test_argv,
                                                                   run_folder, tmp_path):
    assert train.main(tiny_argv('--iteration', 2, '--save_freq', 2)) == 0
    test_script.main(tiny_test_argv('--num_workers', 0))
    crf.main(tiny_test_argv('--num_workers', 1, '--crf_params', 'alpha=2,n_iter=5', '--splits', 'testA'))
    # The page must not depend on where the run is: move the run folder before opening it.
    moved = str(tmp_path / 'moved run')
    shutil.move(run_folder(), moved)
    page = os.path.join(moved, 'index.html')
    console_errors(browser), requested_urls(browser)  # start both logs afresh

    browser.get('file://' + urllib.parse.quote(page))
    assert 'CLTNet-Seg report' in browser.title
    summary = browser.find_element(By.CSS_SELECTOR, 'h2#summary + table')
    summary_rows = [[td.text for td in tr.find_elements(By.TAG_NAME, 'td')]
                    for tr in summary.find_elements(By.CSS_SELECTOR, 'tbody tr')]
    stages_splits = {(row[0], row[1]) for row in summary_rows}
    assert {('test', 'val'), ('test', 'testA'), ('test', 'testB'), ('crf', 'testA')} <= stages_splits
    testA = next(row for row in summary_rows if row[:3] == ['test', 'testA', 'mean'])
    assert all(0 <= float(value) <= 1 for value in testA[3:8]), testA  # JA DI AC SE SP

    tables = {el.get_attribute('id'): el.find_element(By.XPATH, 'following-sibling::table[1]')
              for el in browser.find_elements(By.CSS_SELECTOR, 'h2[id^="test-"], h2[id^="crf-"]')}
    # crf.py refines val beside --splits whenever test.py wrote val's maps (its before/after figures).
    assert set(tables) == {'test-val', 'test-testA', 'test-testB', 'crf-val', 'crf-testA'}
    for table in tables.values():
        assert 'sortable' in table.get_attribute('class')
        assert table.find_elements(By.CSS_SELECTOR, 'tbody tr')

    # Thumbnails load lazily: bring each into view, as scrolling would, then wait for all of them.
    for img in browser.find_elements(By.TAG_NAME, 'img'):
        browser.execute_script('arguments[0].scrollIntoView({block: "center"});', img)
    wait_for(browser, 'return Array.from(document.images).every(function (i) { return i.complete; });',
             message='some images never finished loading')
    images = browser.execute_script(IMAGES_JS)
    # Every per-image row has its thumbnails (overlay, translation, CAM; CRF: before and after).
    assert browser.execute_script('return Array.from(document.querySelectorAll("table.images tbody tr"))'
                                  '.filter(function (row) { return row.querySelectorAll("img").length < 2; })'
                                  '.length;') == 0
    assert len(images) >= 2 * (3 + 3 + 2 + 3 + 3)  # test.py val, testA, testB and CRF val, testA rows (tiny dataset)
    broken = [img['src'] for img in images if not (img['complete'] and img['width'] > 0 and img['shown'] > 0)]
    assert not broken, f'broken images: {broken}'
    assert all(not img['src'].startswith(('/', 'http:', 'https:', 'file:')) for img in images)  # relative
    # Everything the page loaded came from disk, from the run folder: no CDN, no server.
    requests = requested_urls(browser)
    folder_url = 'file://' + urllib.parse.quote(moved) + '/'
    # The page and each distinct thumbnail once (the CRF table shows test.py's overlays again).
    assert sorted(requests) == sorted([folder_url + 'index.html']
                                      + [folder_url + src for src in {img['src'] for img in images}])
    assert all(url.startswith(folder_url) for url in requests), requests

    # Sorting: the testA table starts worst DI first; clicking DI flips to best first, clicking name sorts
    # by name, clicking name again reverses it.
    table = tables['test-testA']
    browser.execute_script('window.scrollTo(0, 0);')
    di = _column(table, 'DI')
    before = browser.execute_script(TABLE_JS, table, di)
    values = _keys(v for _, v in before)
    assert values == sorted(values), 'the table starts with the worst DI'
    header = table.find_elements(By.CSS_SELECTOR, 'thead th')[di]
    header.click()
    after = browser.execute_script(TABLE_JS, table, di)
    assert header.get_attribute('data-dir') == 'desc'
    assert _keys(v for _, v in after) == sorted(values, reverse=True)
    assert sorted(after) == sorted(before)  # the same rows, moved whole

    name_header = table.find_elements(By.CSS_SELECTOR, 'thead th')[0]
    name_header.click()
    names = [name for name, _ in browser.execute_script(TABLE_JS, table, di)]
    assert names == sorted(names) and header.get_attribute('data-dir') is None
    name_header.click()
    assert [name for name, _ in browser.execute_script(TABLE_JS, table, di)] == sorted(names, reverse=True)
    header.click()  # back to worst DI first for the screenshot
    assert header.get_attribute('data-dir') == 'asc'

    browser.execute_script('window.scrollTo(0, 0);')
    shot = full_page_screenshot(browser, 'run_report.png')
    assert os.path.getsize(shot) > 10_000
    errors = console_errors(browser)
    assert not errors, errors


def test_run_report_explains_itself_at_laptop_width(browser, tmp_path):
    page = write_run_report(make_fake_run(tmp_path / 'results' / 'ISIC' / 'isic_1' / 'demo'))
    size = browser.get_window_size()
    browser.set_window_size(*LAPTOP)
    try:
        console_errors(browser)
        browser.get('file://' + urllib.parse.quote(page))
        width, height = browser.execute_script('return [window.innerWidth, window.innerHeight];')
        assert width == LAPTOP[0]
        # The legend is on the first screen: which outline is the prediction, which the ground truth.
        legend = browser.find_element(By.ID, 'legend')
        assert legend.is_displayed() and legend.rect['y'] + legend.rect['height'] <= height
        assert 'green outline: the prediction' in legend.text and 'red outline: the ground truth' in legend.text
        colours = [swatch.value_of_css_property('border-top-color')
                   for swatch in legend.find_elements(By.CSS_SELECTOR, '.swatch')]
        assert colours == ['rgba(0, 255, 0, 1)', 'rgba(255, 0, 0, 1)']

        choices = browser.find_element(By.ID, 'choices')
        browser.execute_script('arguments[0].scrollIntoView();', choices)
        assert choices.is_displayed()
        rows = [[td.text for td in row.find_elements(By.TAG_NAME, 'td')]
                for row in choices.find_elements(By.CSS_SELECTOR, 'tbody tr')]
        assert [row[:2] for row in rows] == [
            ['lesion map', 'fused'], ['checkpoint', 'step 200 (iter_0000200.pt)'],
            ['threshold', 'fixed threshold 0.35 on the calibrated map'], ['post-processing', 'largest_component'],
            ['chosen on', 'val'], ['val DI', '0.7777'], ['CRF values', 'alpha=2, sxy=40, n_iter=5, postprocess=none'],
            ['CRF chosen on', 'val'], ['val DI, CRF', '0.7777 before the CRF, 0.8123 after']]
        # Nothing wider than the window: no sideways scrolling to read a table.
        assert browser.execute_script('return document.documentElement.scrollWidth;') <= width
        assert choices.rect['x'] + choices.rect['width'] <= width

        # The full ranking is folded away until asked for.
        ranking = browser.find_element(By.CSS_SELECTOR, '#choices ~ details')
        table = ranking.find_element(By.TAG_NAME, 'table')
        assert not table.is_displayed()
        ranking.find_element(By.TAG_NAME, 'summary').click()
        assert table.is_displayed() and len(table.find_elements(By.CSS_SELECTOR, 'tbody tr')) == 2
        browser.execute_script('window.scrollTo(0, 0);')
        assert os.path.getsize(full_page_screenshot(browser, 'run_report_1366.png')) > 10_000
        errors = console_errors(browser)
        assert not errors, errors
    finally:
        browser.set_window_size(size['width'], size['height'])
