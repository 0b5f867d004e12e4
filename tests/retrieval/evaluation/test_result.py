from __future__ import annotations

from retrieval.evaluation import write_trec_run


def test_write_trec_run(tmp_path):
    path = write_trec_run({"q1": [("a", 2.0), ("b", 2.0)]}, tmp_path / "r.trec", tag="t")
    lines = path.read_text().splitlines()
    assert [ln.split()[:4] for ln in lines] == [["q1", "Q0", "a", "1"], ["q1", "Q0", "b", "2"]]
    assert float(lines[0].split()[4]) > float(lines[1].split()[4])
