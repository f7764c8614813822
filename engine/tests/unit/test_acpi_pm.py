import pytest

from ferry.devices import acpi_pm
from ferry.devices.acpi_pm import AcpiPm, AcpiPmState
from ferry.devices.base import StateVersionError
from ferry.devices.bus import PortIoBus

PM1_STS = 0x600
PM1_EN = 0x602
PM1_CNT = 0x604
PWRBTN = 1 << 8
WAK_STS = 1 << 15
SCI_EN = 1
SLP_EN = 1 << 13


def slp_typ(value):
    return value << 10


class Pm:
    def __init__(self, with_reset=True):
        self.sci = []
        self.poweroffs = 0
        self.resets = 0
        self.dev = AcpiPm("acpi.pm", self.sci.append, self._poweroff,
                          self._reset if with_reset else None)
        self.bus = PortIoBus()
        self.bus.register(acpi_pm.PM1A_EVT_BLK, acpi_pm.BLOCK_LENGTH, self.dev)

    def _poweroff(self):
        self.poweroffs += 1

    def _reset(self):
        self.resets += 1

    def inw(self, port):
        return int.from_bytes(self.bus.read(port, 2), "little")

    def outw(self, port, value):
        self.bus.write(port, value.to_bytes(2, "little"))


@pytest.fixture
def pm():
    return Pm()


def test_always_in_acpi_mode(pm):
    assert pm.inw(PM1_CNT) & SCI_EN
    pm.outw(PM1_CNT, 0)
    assert pm.inw(PM1_CNT) & SCI_EN


def test_power_button_without_enable_sets_status_but_no_sci(pm):
    pm.dev.press_power_button()
    assert pm.inw(PM1_STS) & PWRBTN
    assert pm.sci == []


def test_power_button_with_enable_raises_sci_and_w1c_lowers_it(pm):
    pm.outw(PM1_EN, PWRBTN)
    pm.dev.press_power_button()
    assert pm.sci == [True]
    pm.outw(PM1_STS, 0)  # writing zeros clears nothing
    assert pm.inw(PM1_STS) & PWRBTN and pm.sci == [True]
    pm.outw(PM1_STS, PWRBTN)
    assert not pm.inw(PM1_STS) & PWRBTN
    assert pm.sci == [True, False]


def test_sci_is_a_level_that_follows_the_enable_bit(pm):
    pm.dev.press_power_button()
    pm.outw(PM1_EN, PWRBTN)
    assert pm.sci == [True]
    pm.dev.press_power_button()
    assert pm.sci == [True]
    pm.outw(PM1_EN, 0)
    assert pm.sci == [True, False]


def test_byte_wide_status_clear(pm):
    pm.outw(PM1_EN, PWRBTN)
    pm.dev.press_power_button()
    pm.bus.write(PM1_STS, b"\xff")  # low byte only: PWRBTN_STS is in the high byte
    assert pm.sci == [True]
    pm.bus.write(PM1_STS + 1, b"\x01")
    assert pm.sci == [True, False]


def test_dword_read_spans_status_and_enable(pm):
    pm.outw(PM1_EN, PWRBTN)
    pm.dev.press_power_button()
    value = int.from_bytes(pm.bus.read(PM1_STS, 4), "little")
    assert value == PWRBTN | PWRBTN << 16


def test_s5_powers_off(pm):
    pm.outw(PM1_CNT, slp_typ(5))  # Linux writes the type first...
    assert pm.poweroffs == 0
    pm.outw(PM1_CNT, slp_typ(5) | SLP_EN)  # ...then the type with SLP_EN
    assert pm.poweroffs == 1


def test_boot_contract_poweroff_value(pm):
    pm.outw(PM1_CNT, 0x3400)
    assert pm.poweroffs == 1


@pytest.mark.parametrize("typ", [0, 1, 2, 3, 4, 6, 7])
def test_other_sleep_types_do_not_power_off(pm, typ):
    pm.outw(PM1_CNT, slp_typ(typ) | SLP_EN)
    assert pm.poweroffs == 0
    assert pm.inw(PM1_STS) & WAK_STS  # woken at once, so OSPM stops waiting
    assert pm.sci == []


def test_slp_en_reads_back_as_zero(pm):
    pm.outw(PM1_CNT, slp_typ(3))
    assert pm.inw(PM1_CNT) == slp_typ(3) | SCI_EN
    pm.outw(PM1_CNT, slp_typ(3) | SLP_EN)
    assert not pm.inw(PM1_CNT) & SLP_EN


def test_reset_register(pm):
    pm.bus.write(acpi_pm.RESET_REG, bytes([acpi_pm.RESET_VALUE ^ 1]))
    assert pm.resets == 0
    pm.bus.write(acpi_pm.RESET_REG, bytes([acpi_pm.RESET_VALUE]))
    assert pm.resets == 1
    assert pm.bus.read(0x606, 2) == b"\xff\xff"


def test_reset_register_ignored_without_callback():
    pm = Pm(with_reset=False)
    pm.bus.write(acpi_pm.RESET_REG, bytes([acpi_pm.RESET_VALUE]))
    assert pm.resets == 0


def test_poweroff_callback_may_reenter_the_device():
    seen = []
    dev = AcpiPm("acpi.pm", lambda level: None, lambda: seen.append(dev.save()))
    dev.io_write(4, (0x3400).to_bytes(2, "little"))
    assert len(seen) == 1


def test_save_load_round_trip_reasserts_sci(pm):
    pm.outw(PM1_EN, PWRBTN)
    pm.outw(PM1_CNT, slp_typ(2))
    pm.dev.press_power_button()
    data = pm.dev.save().to_bytes()

    restored = Pm()
    restored.dev.load(AcpiPmState.from_bytes(data, AcpiPmState.VERSION, "acpi.pm"))
    assert restored.sci == [True]
    assert restored.bus.read(0x600, 8) == pm.bus.read(0x600, 8)
    for p in (pm, restored):
        p.outw(PM1_STS, PWRBTN)
        p.outw(PM1_CNT, slp_typ(5) | SLP_EN)
    assert restored.sci[-1] is False and pm.sci[-1] is False
    assert restored.poweroffs == pm.poweroffs == 1


def test_load_of_quiet_state_lowers_sci(pm):
    pm.dev.load(AcpiPmState())
    assert pm.sci == [False]


def test_newer_state_version_is_refused_by_section_name(pm):
    data = pm.dev.save().to_bytes()
    with pytest.raises(StateVersionError, match="acpi.pm"):
        AcpiPmState.from_bytes(data, AcpiPmState.VERSION + 1, "acpi.pm")
