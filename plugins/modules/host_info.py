#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Ferry Developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
---
module: host_info
short_description: What a Ferry hypervisor host offers, for placement
version_added: 0.1.0
description:
  - Reports the host's KVM, CPU model and feature flags, memory (total, free, committed to
    running VMs), CPUs and committed vCPUs, and its VMs, which are the facts placing a VM needs.
  - Changes nothing.
author:
  - Ferry Developers (@ferry)
options: {}
extends_documentation_fragment:
  - ferry.hypervisor.engine
  - ferry.hypervisor.attributes
  - ferry.hypervisor.attributes.info_module
seealso:
  - module: ferry.hypervisor.vm_info
'''

EXAMPLES = r'''
- name: Read each hypervisor's capacity
  ferry.hypervisor.host_info:
  register: facts

- name: Memory left for new VMs, in MiB
  ansible.builtin.debug:
    msg: "{{ facts.host.memory_free_mib }} MiB free, {{ facts.host.committed_memory_mib }} MiB committed"
'''

RETURN = r'''
host:
  description: The host's facts, as C(ferry --json host-info) prints them.
  returned: always
  type: dict
  contains:
    hostname:
      description: The host's name.
      type: str
      sample: h1
    kvm:
      description: C(available), C(flavour) (V(intel), V(amd) or a software KVM), C(hardware_virtualization), C(max_vcpus); C(error) when unavailable.
      type: dict
      sample: {available: true, flavour: intel, hardware_virtualization: true, max_vcpus: 1024}
    cpu:
      description: The CPU's C(vendor), C(model) and feature C(flags) (sorted), as Linux reports them.
      type: dict
      sample: {vendor: GenuineIntel, model: "Intel(R) Xeon(R) Gold 6230", flags: [avx2, sse2]}
    cpus:
      description: Logical CPUs.
      type: int
      sample: 16
    memory_total_mib:
      description: Memory in MiB.
      type: int
      sample: 65536
    memory_free_mib:
      description: Memory available to new VMs in MiB (Linux's MemAvailable).
      type: int
      sample: 40960
    committed_memory_mib:
      description: Memory of the running and paused VMs, in MiB.
      type: int
      sample: 8192
    committed_vcpus:
      description: vCPUs of the running and paused VMs.
      type: int
      sample: 6
    state_dir:
      description: The engine's state directory.
      type: str
      sample: /var/lib/ferry
    vms:
      description: Each VM's C(name), C(state), C(vcpus), C(memory) and C(tags).
      type: list
      elements: dict
    drained:
      description:
        - The drain mark (C(ferry drain)) with C(since) (UNIX time) and C(reason), or V(null). A
          drained host takes no arriving VM and no new one until C(ferry undrain).
      type: dict
      sample: {"since": 1796400000.0, "reason": "kernel upgrade"}
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ferry.hypervisor.plugins.module_utils.common import argument_spec, run
from ansible_collections.ferry.hypervisor.plugins.module_utils.info import HostInfo


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    run(module, HostInfo, predict_without_engine=False)


if __name__ == '__main__':
    main()
