"""Figures in the README come from commands: the quickstart paragraph quotes
``docs/quickstart/summary.json``, which ``QUICKSTART_RECORD=1 bash tools/quickstart.sh``
writes from the run's own logs. Re-record after a change that moves them."""
import json
import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_readme_quickstart_figures_equal_the_recorded_run():
    summary = json.loads((REPO_ROOT / 'docs' / 'quickstart' / 'summary.json').read_text())
    readme = ' '.join((REPO_ROOT / 'README.md').read_text().split())
    match = re.search(
        r'the loss fell from ([\d.]+) \(iteration (\d+)\) to ([\d.]+) and the toy validation '
        r'mIoU went from ([\d.]+) \(iteration (\d+)\) to \*\*([\d.]+)\*\* \(iteration (\d+)\)',
        readme)
    assert match, 'the quickstart sentence of README.md changed: update this test'
    loss0, it0, loss1, miou0, val0, miou1, val1 = match.groups()
    assert (float(loss0), int(it0)) == (summary['first_loss']['loss'],
                                        summary['first_loss']['iter'])
    assert float(loss1) == summary['last_loss']['loss']
    assert float(miou0) == summary['val_miou'][val0]
    assert float(miou1) == summary['val_miou'][val1] == summary['test_miou']
    assert f'({summary["train_seconds"]} s)' in readme
    assert (REPO_ROOT / 'docs' / 'quickstart' / 'curves.png').is_file()
