# -*- coding: utf-8 -*-
# Copyright: Ferry Developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The facts of the ferry.hypervisor.vm_info and host_info modules: read from the engine,
never changed, so check mode runs them as a real run does."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import calendar
import time

from ansible_collections.ferry.hypervisor.plugins.module_utils.engine import EngineError

CREATED_FORMAT = '%Y-%m-%dT%H:%M:%S'


def created_epoch(created):
    """Seconds since the epoch of an engine timestamp (``2026-12-03T07:36:18.435868Z``), or None."""
    if not isinstance(created, str) or not created.endswith('Z'):
        return None
    whole, dot, fraction = created[:-1].partition('.')
    try:
        seconds = calendar.timegm(time.strptime(whole, CREATED_FORMAT))
    except ValueError:
        return None
    return seconds + (float('0.' + fraction) if dot and fraction.isdigit() else 0.0)


class VmInfo(object):
    """Every VM of the host (or those named), each with its snapshots and the age of the newest."""

    def __init__(self, engine, params, check_mode=False):
        self.engine = engine
        self.params = params
        self.done = []

    def apply(self):
        names = self.params['name']
        vms = self.engine.list_vms()
        if names:
            known = set(vm['name'] for vm in vms)
            missing = [name for name in names if name not in known]
            if missing:
                raise EngineError('name: no VM named %s on this host' % ', '.join(repr(n) for n in missing),
                                  'not-found')
            vms = [vm for vm in vms if vm['name'] in names]
        now = time.time()
        return {'changed': False, 'vms': [self.describe(vm, now) for vm in vms]}

    def describe(self, vm, now):
        vm = dict(vm)
        snapshots = self.engine.snapshots(vm['name']) if self.params['snapshots'] else None
        vm['snapshots'] = snapshots
        newest = max([created_epoch(s.get('created')) or 0 for s in snapshots or []] or [0])
        vm['last_snapshot_age'] = round(now - newest, 3) if newest else None
        vm.setdefault('migration', None)
        return vm


class HostInfo(object):
    def __init__(self, engine, params, check_mode=False):
        self.engine = engine
        self.done = []

    def apply(self):
        return {'changed': False, 'host': self.engine.host_info()}
