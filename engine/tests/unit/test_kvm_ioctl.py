"""The ioctl chokepoint: errors name the request; the backend can be replaced."""

import errno

import pytest

from ferry.kvm import abi, ioctl
from ferry.kvm.fds import Kvm, KvmUnavailable


@pytest.fixture
def recorded():
    calls = []

    def backend(fd, request, arg):
        calls.append((fd, request))
        return -errno.EINVAL if request == abi.IOCTLS["KVM_CREATE_IRQCHIP"] else 7

    ioctl.set_backend(backend)
    yield calls
    ioctl.set_backend(None)


def test_failure_names_the_ioctl_and_errno(recorded):
    with pytest.raises(ioctl.KvmIoctlError) as err:
        ioctl.call(3, "KVM_CREATE_IRQCHIP")
    assert "KVM_CREATE_IRQCHIP failed" in str(err.value)
    assert "EINVAL" in str(err.value)
    assert err.value.errno == errno.EINVAL


def test_struct_arguments_pass_by_address(recorded):
    regs = abi.Regs()
    assert ioctl.call(5, "KVM_GET_REGS", regs) == 7
    assert recorded == [(5, abi.IOCTLS["KVM_GET_REGS"])]


def test_missing_device_is_one_clear_line(tmp_path):
    with pytest.raises(KvmUnavailable) as err:
        Kvm(str(tmp_path / "kvm"))
    message = str(err.value)
    assert "cannot open" in message and "\n" not in message
