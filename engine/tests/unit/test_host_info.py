"""The CPU facts host-info reports, read from a cpuinfo file."""

from ferry.host.info import cpu_model

CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Gold 6230
flags\t\t: fpu vme sse2 avx2 fpu

processor\t: 1
vendor_id\t: GenuineIntel
model name\t: another
flags\t\t: fpu avx512f
"""


def test_the_first_cpus_model_and_its_flags_sorted_once_each(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(CPUINFO)
    assert cpu_model(str(path)) == {"vendor": "GenuineIntel", "model": "Intel(R) Xeon(R) Gold 6230",
                                    "flags": ["avx2", "fpu", "sse2", "vme"]}


def test_no_cpuinfo_is_no_model_not_a_failure(tmp_path):
    assert cpu_model(str(tmp_path / "absent")) == {"vendor": None, "model": None, "flags": []}
