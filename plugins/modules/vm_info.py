#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Ferry Developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
---
module: vm_info
short_description: The Ferry virtual machines of a host, with their snapshots
version_added: 0.1.0
description:
  - Lists the VMs of a hypervisor host (or the ones named) with their definition, run state,
    snapshots and the age of the newest one, and the progress of a migration under way.
  - Changes nothing.
author:
  - Ferry Developers (@ferry)
options:
  name:
    description:
      - Only these VMs. A name that is not defined on the host fails the task, naming it.
      - All VMs of the host when empty.
    type: list
    elements: str
    default: []
  snapshots:
    description: Include each VM's snapshots (one engine call per VM).
    type: bool
    default: true
extends_documentation_fragment:
  - ferry.hypervisor.engine
  - ferry.hypervisor.attributes
  - ferry.hypervisor.attributes.info_module
seealso:
  - module: ferry.hypervisor.host_info
  - module: ferry.hypervisor.vm_snapshot
'''

EXAMPLES = r'''
- name: Read the VMs of every hypervisor
  ferry.hypervisor.vm_info:
  register: vms

- name: Name the VMs whose newest snapshot is older than a day
  ansible.builtin.debug:
    msg: "{{ vms.vms | selectattr('last_snapshot_age', 'ne', none)
             | selectattr('last_snapshot_age', 'gt', 86400) | map(attribute='name') }}"
'''

RETURN = r'''
vms:
  description: The VMs, by name, each as M(ferry.hypervisor.vm) returns it, and the keys below.
  returned: always
  type: list
  elements: dict
  contains:
    snapshots:
      description:
        - The VM's snapshots, oldest first, as M(ferry.hypervisor.vm_snapshot) returns each.
        - Null with O(snapshots=false).
      type: list
      elements: dict
    last_snapshot_age:
      description: Seconds since the newest snapshot was taken; null when it has none (or O(snapshots=false)).
      type: float
      sample: 3600.5
    migration:
      description: While the VM migrates, its progress (phase, round, bytes, rate); null otherwise.
      type: dict
      sample: null
error_kind:
  description: Why the module failed; V(engine-missing) when the engine is not installed on the host.
  returned: failure
  type: str
  sample: engine-missing
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ferry.hypervisor.plugins.module_utils.common import argument_spec, run
from ansible_collections.ferry.hypervisor.plugins.module_utils.info import VmInfo


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(
            name=dict(type='list', elements='str', default=[]),
            snapshots=dict(type='bool', default=True),
        ),
        supports_check_mode=True,
    )
    run(module, VmInfo, predict_without_engine=False)


if __name__ == '__main__':
    main()
