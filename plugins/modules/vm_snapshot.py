#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Ferry Developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
---
module: vm_snapshot
short_description: Take, delete and restore snapshots of Ferry virtual machines
version_added: 0.1.0
description:
  - Takes a snapshot of a running or paused VM (live by default, the guest pausing only for
    the last few milliseconds), deletes one, or runs the VM, or a clone of it, from one.
  - A snapshot holds the VM's memory, vCPU and device state and its definition, with a
    checksum for every part; a restore checks them all before it touches a running VM.
author:
  - Ferry Developers (@ferry)
options:
  name:
    description: The VM the snapshot belongs to.
    type: str
    required: true
  snapshot:
    description:
      - The snapshot's id, unique per VM. Letters, digits, V(_), V(.), V(:) and V(-); at most
        128 characters; starts with a letter or digit.
      - Required with O(state=absent) and O(state=restored). With O(state=present) and no id,
        the engine names the snapshot by the UTC time, and every run takes a new one.
    type: str
  state:
    description:
      - V(present) takes the snapshot unless the VM already has one with this id (by id only,
        a snapshot is never replaced).
      - V(absent) deletes it; a snapshot that is not there is fine.
      - V(restored) runs the VM from it. This always reports a change, as a revert does,
        except with O(as) when that clone already runs from this snapshot.
    type: str
    choices: [present, absent, restored]
    default: present
  tags:
    description:
      - Tags recorded with a new snapshot. The tags of an existing one do not change; a
        different list gives a warning.
    type: list
    elements: str
    default: []
  live:
    description:
      - V(true) copies memory while the guest runs and pauses it only for the last delta;
        V(false) pauses the guest for the whole save.
    type: bool
    default: true
  compress:
    description: Store the memory zstd-compressed (smaller, for archives; restores copy it in at once).
    type: bool
    default: false
  as:
    description:
      - With O(state=restored), restore into a new VM of this name (a clone, with the
        snapshot's definition) and leave O(name) as it is.
      - A VM of this name that already runs from this snapshot is left alone (no change); any
        other VM of this name fails the task.
    type: str
  replace:
    description:
      - With O(state=restored) and no O(as), power off the running VM and restore over it.
        Without it, restoring over a running or paused VM fails.
    type: bool
    default: false
extends_documentation_fragment:
  - ferry.hypervisor.engine
  - ferry.hypervisor.attributes
attributes:
  check_mode:
    support: full
    description:
      - Predicts C(changed), the diff and the snapshot or VM a real run would leave, and refuses
        what a real run refuses (a stopped VM, a missing snapshot, a clone name in use) with the
        same message, without changing anything.
      - A VM that is not defined yet (an earlier task of the same check run would define it)
        is predicted with a warning.
  diff_mode:
    support: full
    description: Shows the VM's snapshot ids before and after, and for a restore the run state of the restored VM.
notes:
  - The snapshot is taken, and the restore done, by the engine on the managed host
    (C(ferry snapshot create), C(ferry restore)); its errors are reported with its one-line message.
seealso:
  - module: ferry.hypervisor.vm
  - module: ferry.hypervisor.vm_info
'''

EXAMPLES = r'''
- name: Checkpoint a VM before an upgrade
  ferry.hypervisor.vm_snapshot:
    name: web
    snapshot: before-upgrade
    tags: [upgrade]

- name: Roll the VM back to it
  ferry.hypervisor.vm_snapshot:
    name: web
    snapshot: before-upgrade
    state: restored
    replace: true

- name: Start a clone beside it, to look at what it was
  ferry.hypervisor.vm_snapshot:
    name: web
    snapshot: before-upgrade
    state: restored
    as: web-before

- name: Delete the checkpoint
  ferry.hypervisor.vm_snapshot:
    name: web
    snapshot: before-upgrade
    state: absent
'''

RETURN = r'''
snapshot:
  description:
    - The snapshot the task is about; for O(state=absent), the one deleted (null if there was none).
    - In check mode for a new snapshot, the figures only a real save measures (RV(snapshot.created),
      RV(snapshot.pause_ms), RV(snapshot.total_ms), RV(snapshot.disk_bytes)) are null.
  returned: always
  type: dict
  contains:
    id:
      description: The snapshot's id.
      type: str
      sample: before-upgrade
    vm:
      description: The VM it belongs to.
      type: str
      sample: web
    created:
      description: When it was taken (UTC, ISO 8601).
      type: str
      sample: "2026-12-03T07:36:18.435868Z"
    mode:
      description: V(live) or V(stop-the-world).
      type: str
      sample: live
    pause_ms:
      description: How long the guest was paused for the save, in milliseconds.
      type: float
      sample: 3.2
    total_ms:
      description: How long the save took, in milliseconds.
      type: float
      sample: 118.0
    disk_bytes:
      description: Bytes the snapshot takes on disk.
      type: int
      sample: 107286528
    tags:
      description: Its tags.
      type: list
      elements: str
      sample: [upgrade]
    origin:
      description: What made it (C(kind) V(manual) for a snapshot taken on request).
      type: dict
      sample: {kind: manual}
    compression:
      description: V(zstd), or null for raw memory.
      type: str
      sample: null
    path:
      description: Its folder on the host.
      type: str
      sample: /var/lib/ferry/vms/web/snapshots/before-upgrade
snapshots:
  description: All snapshots of the VM after the task, oldest first, each as RV(snapshot).
  returned: always
  type: list
  elements: dict
vm:
  description: With O(state=restored), the VM now running from the snapshot (O(as) or O(name)), as M(ferry.hypervisor.vm) returns it.
  returned: when O(state=restored)
  type: dict
  sample: {name: web-before, state: running, restored_from: {vm: web, snapshot: before-upgrade}}
diff:
  description: Snapshot ids before and after (shown with C(--diff)); for a restore also the restored VM's run state.
  returned: always
  type: dict
  sample:
    before: {snapshots: []}
    after: {snapshots: [before-upgrade]}
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ferry.hypervisor.plugins.module_utils.common import argument_spec, run
from ansible_collections.ferry.hypervisor.plugins.module_utils.snapshot_manager import SnapshotManager


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(
            name=dict(type='str', required=True),
            snapshot=dict(type='str'),
            state=dict(type='str', default='present', choices=['present', 'absent', 'restored']),
            tags=dict(type='list', elements='str', default=[]),
            live=dict(type='bool', default=True),
            compress=dict(type='bool', default=False),
            replace=dict(type='bool', default=False),
            **{'as': dict(type='str')}
        ),
        required_if=[('state', 'absent', ['snapshot']), ('state', 'restored', ['snapshot'])],
        mutually_exclusive=[('as', 'replace')],
        supports_check_mode=True,
    )
    if module.params['state'] != 'restored':
        for option in ('as', 'replace'):
            if module.params[option]:
                module.fail_json(msg='%s: only applies with state=restored (state is %s)'
                                     % (option, module.params['state']))
    run(module, SnapshotManager)


if __name__ == '__main__':
    main()
