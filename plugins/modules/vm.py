#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Ferry Developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
---
module: vm
short_description: Define Ferry virtual machines and set their run state
version_added: 0.1.0
description:
  - Defines, starts, stops, pauses and removes virtual machines of the Ferry engine on a
    hypervisor host.
  - Every change blocks until the VM has reached the requested state.
  - Idempotent, with check mode and diff mode; the diff compares the definition and the run
    state.
author:
  - Ferry Developers (@ferry)
options:
  name:
    description:
      - The VM's name, unique on the host.
      - Lowercase letters, digits, V(.), V(_) and V(-); at most 63 characters.
    type: str
    required: true
  state:
    description:
      - V(present) makes sure the VM is defined as given and leaves its run state alone;
        a new VM is created stopped.
      - V(running) defines the VM if needed and starts it; a crashed VM is started again.
      - V(stopped) presses the VM's power button and waits; a guest still up after
        O(stop_timeout) seconds is powered off. A new VM is defined, stopped.
      - V(paused) defines and starts the VM if needed and pauses its vCPUs.
      - V(absent) powers the VM off and removes it with its folder (console log and snapshots included).
    type: str
    choices: [present, running, stopped, paused, absent]
    default: present
  vcpus:
    description:
      - Number of virtual CPUs, 1 to 32.
      - Required to create a VM. Cannot change while the VM runs or is paused.
    type: int
  memory:
    description:
      - Guest memory in MiB, a multiple of 2.
      - Required to create a VM. Cannot change while the VM runs or is paused.
    type: int
  kernel:
    description:
      - Absolute path of the guest kernel on the managed host, or V(builtin:selfcheck) for
        the self-checking test guest shipped with the engine.
      - Required to create a VM. A change applies when the VM next starts.
    type: str
  initrd:
    description:
      - Absolute path of an initial ramdisk on the managed host.
      - An empty string removes it from the definition.
    type: str
  cmdline:
    description:
      - The guest's kernel command line.
      - An empty string clears it.
    type: str
  cpu:
    description:
      - The CPU the guest sees. V(host) (the default for a new VM) is all that this host offers;
        V(baseline) is x86-64-v2, which runs on any 64-bit x86 server of the last decade and so
        lets the VM move between unlike hosts; a list of feature names (as
        M(ferry.hypervisor.host_info) lists them in C(cpu.features)) is exactly those, for
        example the common set of a fleet from the P(ferry.hypervisor.cpu_baseline#filter) filter.
      - The engine presents exactly that CPUID and refuses to start the VM on a host that lacks
        part of it. A change applies when the VM next starts.
    type: raw
  tags:
    description:
      - Tags of the VM (letters, digits, V(_), V(.), V(:), V(-)), which checkpoint policies
        (the P(ferry.hypervisor.checkpoint#role) role's C(tags) section) select VMs by.
      - The whole list is replaced; V([]) removes every tag. Not given keeps the stored tags.
    type: list
    elements: str
  stop_timeout:
    description:
      - Seconds a guest gets to shut down after the power button before it is powered off,
        with O(state=stopped); the time allowed for a power off with O(state=absent).
    type: int
    default: 30
extends_documentation_fragment:
  - ferry.hypervisor.engine
  - ferry.hypervisor.attributes
attributes:
  check_mode:
    support: full
    description:
      - Predicts C(changed), the diff and the resulting VM without changing anything.
      - On a host the P(ferry.hypervisor.engine#role) role has not installed the engine on yet
        (the first check run of a new host), the VM is predicted as new, with a warning, and its
        definition is not checked by the engine. Outside check mode such a host fails the task
        with a message naming the role.
  diff_mode:
    support: full
    description: Shows the definition and run state before and after.
notes:
  - Changing O(vcpus) or O(memory) of a running or paused VM fails with a message to stop it
    first. Other definition changes to a running VM are stored and take effect at its next
    start; the module warns about them.
  - Started VMs run in their own process, detached from the SSH session that started them.
  - The module runs the engine's command, C(ferry --json), with the definition on its standard
    input; engine errors are reported with the engine's one-line message.
'''

EXAMPLES = r'''
- name: Run the self-checking test guest
  ferry.hypervisor.vm:
    name: selfcheck
    state: running
    vcpus: 1
    memory: 64
    kernel: builtin:selfcheck
    cmdline: fill=50 rate=1000 hb=1000

- name: Give a VM more memory (stop, redefine, start again)
  ferry.hypervisor.vm:
    name: web
    state: "{{ item }}"
    memory: 1024
  loop: [stopped, running]

- name: Shut a VM down, allowing its guest two minutes
  ferry.hypervisor.vm:
    name: web
    state: stopped
    stop_timeout: 120

- name: Remove a VM and its folder
  ferry.hypervisor.vm:
    name: web
    state: absent

- name: Use another state directory for every Ferry module in this block
  module_defaults:
    group/ferry.hypervisor.ferry:
      state_dir: /srv/ferry
  block:
    - name: Define a VM without starting it
      ferry.hypervisor.vm:
        name: spare
        vcpus: 2
        memory: 512
        kernel: /srv/ferry/images/vmlinux
        initrd: /srv/ferry/images/initrd.img
        cmdline: console=ttyS0
'''

RETURN = r'''
vm:
  description:
    - The VM after the task; in check mode, the VM as the task would leave it.
    - For O(state=absent), only RV(vm.name) and RV(vm.state).
  returned: always
  type: dict
  contains:
    name:
      description: The VM's name.
      type: str
      sample: selfcheck
    state:
      description: Run state.
      type: str
      sample: running
      choices: [stopped, running, paused, crashed, absent]
    vcpus:
      description: Number of virtual CPUs.
      type: int
      sample: 1
    memory:
      description: Guest memory in MiB.
      type: int
      sample: 64
    kernel:
      description: Guest kernel path or built-in guest.
      type: str
      sample: builtin:selfcheck
    initrd:
      description: Initial ramdisk path, or null.
      type: str
      sample: null
    cmdline:
      description: Guest kernel command line.
      type: str
      sample: fill=50 rate=1000 hb=1000
    error:
      description: Why a crashed VM stopped; null otherwise.
      type: str
      sample: null
    pid:
      description: The VM process while running or paused; null otherwise.
      type: int
      sample: 4242
    boot_count:
      description: Boots since the VM process started (a guest reboot counts).
      type: int
      sample: 1
    path:
      description: The VM's folder on the host.
      type: str
      sample: /var/lib/ferry/vms/selfcheck
    console_log:
      description: Everything the guest wrote to its serial console.
      type: str
      sample: /var/lib/ferry/vms/selfcheck/console.log
    cpu:
      description: The CPU model, V(host), V(baseline) or the sorted list of features.
      type: raw
      sample: host
    cpu_features:
      description: While it runs, the CPU features the guest sees; null otherwise.
      type: list
      elements: str
      sample: [avx, avx2, fpu, sse2]
    restored_from:
      description:
        - The snapshot the VM's current boot came from (C(vm) and C(snapshot)), kept until it
          next starts afresh; null for a boot from its kernel.
      type: dict
      sample: null
diff:
  description: The definition and run state before and after (shown with C(--diff)).
  returned: always
  type: dict
  sample:
    before: {name: selfcheck, vcpus: 1, memory: 64, kernel: "builtin:selfcheck", initrd: null, cmdline: "", cpu: host,
             state: stopped}
    after: {name: selfcheck, vcpus: 1, memory: 64, kernel: "builtin:selfcheck", initrd: null, cmdline: "", cpu: host,
            state: running}
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ferry.hypervisor.plugins.module_utils.common import argument_spec, run
from ansible_collections.ferry.hypervisor.plugins.module_utils.vm_manager import VmManager


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(
            name=dict(type='str', required=True),
            state=dict(type='str', default='present',
                       choices=['present', 'running', 'stopped', 'paused', 'absent']),
            vcpus=dict(type='int'),
            memory=dict(type='int'),
            kernel=dict(type='str'),
            initrd=dict(type='str'),
            cmdline=dict(type='str'),
            cpu=dict(type='raw'),
            tags=dict(type='list', elements='str'),
            stop_timeout=dict(type='int', default=30),
        ),
        supports_check_mode=True,
    )
    run(module, VmManager)


if __name__ == '__main__':
    main()
