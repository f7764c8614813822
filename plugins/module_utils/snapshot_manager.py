# -*- coding: utf-8 -*-
# Copyright: Ferry Developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Desired vs current snapshots of one VM, for the ferry.hypervisor.vm_snapshot module.

``present`` takes a snapshot unless one with that id exists; ``absent`` deletes it;
``restored`` runs the VM (or a clone, ``as``) from it. What would happen is decided before
anything is asked of the engine to change, so check mode reports what a real run does and
refuses what a real run would refuse, with the engine's message.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

from collections import namedtuple

from ansible_collections.ferry.hypervisor.plugins.module_utils.engine import EngineError

ACTIVE = ('running', 'paused')
NOT_DEFINED_YET = ('VM %r is not defined on this host: assuming an earlier task defines and starts it '
                   '(a real run fails if none does)')
TAGS_FIXED = ('snapshot %r of VM %r exists with tags %s: a snapshot keeps the tags it was taken with, '
              'the requested %s are not applied')

# What one state's step leaves: the snapshot it is about, the VM's snapshots afterwards, and
# for a restore the VM that now runs from it (before and after).
Outcome = namedtuple('Outcome', ['changed', 'snapshot', 'snapshots', 'vm_before', 'vm_after'])


class SnapshotManager(object):
    def __init__(self, engine, params, check_mode=False):
        self.engine = engine
        self.params = params
        self.name = params['name']
        self.snapshot_id = params['snapshot']
        self.check_mode = check_mode
        self.done = []
        self.warnings = [engine.warning] if engine.warning else []

    def apply(self):
        vm = self.engine.get(self.name)
        if vm is None:
            if not self.check_mode:
                self.engine.snapshots(self.name)  # raises the engine's own "no VM named ..."
            self.warnings.append(NOT_DEFINED_YET % self.name)
        before = self.engine.snapshots(self.name) if vm else []
        step = getattr(self, self.params['state'])
        outcome = step(vm, before, find(before, self.snapshot_id))
        result = {
            'changed': outcome.changed,
            'snapshot': outcome.snapshot,
            'snapshots': outcome.snapshots,
            'diff': {'before': {'snapshots': ids(before)}, 'after': {'snapshots': ids(outcome.snapshots)}},
            'warnings': self.warnings,
        }
        if outcome.vm_after is not None:
            result['vm'] = outcome.vm_after
            result['diff']['before']['vm'] = run_state(outcome.vm_before, self.target_name())
            result['diff']['after']['vm'] = run_state(outcome.vm_after, self.target_name())
        return result

    # --- the three states ---

    def present(self, vm, before, existing):
        if existing is not None:
            self.warn_about_tags(existing)
            return Outcome(False, existing, before, None, None)
        if vm is not None and vm['state'] not in ACTIVE:
            raise EngineError('%s: the VM is not running; a snapshot saves a running VM' % self.name, 'conflict')
        if self.check_mode:
            snapshot = self.predicted()
            return Outcome(True, snapshot, before + [snapshot], None, None)
        p = self.params
        snapshot = self.engine.create_snapshot(self.name, self.snapshot_id, p['tags'], p['live'], p['compress'])
        self.done.append('create')
        return Outcome(True, snapshot, self.engine.snapshots(self.name), None, None)

    def absent(self, vm, before, existing):
        if existing is None:
            return Outcome(False, None, before, None, None)
        if not self.check_mode:
            self.engine.delete_snapshot(self.name, self.snapshot_id)
            self.done.append('delete')
        after = [snapshot for snapshot in before if snapshot['id'] != self.snapshot_id]
        return Outcome(True, existing, after, None, None)

    def restored(self, vm, before, existing):
        if existing is None and vm is not None:
            raise EngineError('%s: no snapshot %r' % (self.name, self.snapshot_id), 'not-found')
        target = self.target_name()
        current = self.clone() if self.params['as'] is not None else vm
        if self.params['as'] is not None and current is not None:
            if came_from(current, self.name, self.snapshot_id) and current['state'] in ACTIVE:
                return Outcome(False, existing, before, current, current)
            raise EngineError('as: a VM named %r is already defined (and does not run from snapshot %r of %r)'
                              % (target, self.snapshot_id, self.name), 'conflict')
        if self.params['as'] is None and current is not None and current['state'] in ACTIVE \
                and not self.params['replace']:
            raise EngineError('%s: the VM is %s; set replace=true to restore over it, or as=NEWNAME to restore '
                              'a clone beside it' % (self.name, current['state']), 'conflict')
        if self.check_mode:
            return Outcome(True, existing, before, current, self.predicted_vm(vm, current))
        restored = self.engine.restore(self.name, self.snapshot_id, self.params['as'], self.params['replace'])
        self.done.append('restore')
        return Outcome(True, existing, before, current, restored)

    def clone(self):
        """The VM named by ``as``, or None; the engine's refusal of the name names the option."""
        try:
            return self.engine.get(self.params['as'])
        except EngineError as err:
            message = str(err)
            if message.startswith('name: '):
                raise EngineError('as: ' + message[len('name: '):], err.kind)
            raise

    # --- predictions and messages ---

    def target_name(self):
        return self.params['as'] if self.params['as'] is not None else self.name

    def predicted(self):
        """The snapshot a real run would take, as far as it is known before taking it."""
        p = self.params
        return {'id': self.snapshot_id, 'vm': self.name, 'tags': list(p['tags']),
                'mode': 'live' if p['live'] else 'stop-the-world', 'compression': 'zstd' if p['compress'] else None,
                'origin': {'kind': 'manual'}, 'created': None, 'pause_ms': None, 'total_ms': None,
                'disk_bytes': None}

    def predicted_vm(self, vm, current):
        base = dict(current or vm or {'name': self.name})
        base.update(name=self.target_name(), state='running', error=None,
                    restored_from={'vm': self.name, 'snapshot': self.snapshot_id})
        return base

    def warn_about_tags(self, existing):
        wanted = self.params['tags']
        if wanted and sorted(wanted) != sorted(existing.get('tags') or []):
            self.warnings.append(TAGS_FIXED % (self.snapshot_id, self.name, existing.get('tags'), wanted))


def find(snapshots, snapshot_id):
    for snapshot in snapshots:
        if snapshot_id is not None and snapshot.get('id') == snapshot_id:
            return snapshot
    return None


def ids(snapshots):
    return [snapshot.get('id') for snapshot in snapshots]


def came_from(vm, name, snapshot_id):
    return vm.get('restored_from') == {'vm': name, 'snapshot': snapshot_id}


def run_state(vm, name):
    """What the diff shows of the VM a restore runs."""
    if vm is None:
        return {'name': name, 'state': 'absent'}
    return {'name': vm.get('name', name), 'state': vm.get('state'), 'restored_from': vm.get('restored_from')}
