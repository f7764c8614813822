# -*- coding: utf-8 -*-
# Copyright: Ferry Developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Declared placement against what the hosts run: which VMs move where, so that a VM declared
on another host than the one it runs on is migrated there and never started a second time.

``declared`` maps each hypervisor to its ``ferry_vms`` (ferry.hypervisor.vm parameters);
``seen`` maps each hypervisor to its ferry.hypervisor.vm_info result, or None when it was not
read. A host whose engine is not installed yet runs nothing; a host that failed to answer
could run anything, so no VM declared elsewhere and defined nowhere known is started while it
is silent.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

ENGINE_MISSING = 'engine-missing'  # the error_kind of a module on a host without the engine


def migration_mode(state):
    """How a VM in ``state`` moves: a stopped VM's definition moves cold, anything else live."""
    return 'cold' if state == 'stopped' else 'live'


def wanted(vm):
    return vm.get('state', 'running') != 'absent'


def observed(seen):
    """host -> {VM name: state} of the hosts that answered, and the hosts that did not."""
    vms, silent = {}, []
    for host, result in sorted(seen.items()):
        if result is None or result.get('unreachable') or result.get('skipped'):
            silent.append(host)
        elif result.get('failed'):
            if result.get('error_kind') == ENGINE_MISSING:
                vms[host] = {}
            else:
                silent.append(host)
        else:
            vms[host] = dict((vm['name'], vm['state']) for vm in result.get('vms', []))
    return vms, silent


def declared_hosts(declared):
    """VM name -> the hosts that declare it wanted."""
    hosts = {}
    for host, vms in sorted(declared.items()):
        for vm in vms or []:
            if wanted(vm):
                hosts.setdefault(vm['name'], []).append(host)
    return hosts


def plan(here, here_vms, declared, seen):
    """What ``here`` does about placement: the VMs it sends away (``moves``), the ones it
    receives (``arrivals``), the ones it must not start (``held``, each with its reason), the
    declarations that contradict each other (``conflicts``) and the hosts that did not answer
    (``silent``). VMs defined here and declared nowhere are left alone: ``ferry_vms`` lists
    what a host runs, not everything it may have."""
    where, silent = observed(seen)
    wanted_on = declared_hosts(dict(declared, **{here: here_vms}))
    defined_on = {}
    for host, vms in sorted(where.items()):
        for name in vms:
            defined_on.setdefault(name, []).append(host)
    result = {'moves': [], 'arrivals': [], 'held': [], 'conflicts': [], 'silent': silent}
    for name, hosts in sorted(wanted_on.items()):
        defined = defined_on.get(name, [])
        if here in hosts or here in defined:
            _place(result, here, name, hosts, defined, where)
    return result


def _place(result, here, name, hosts, defined, where):
    """One VM that ``here`` declares or has: its move, arrival, hold or conflict, if any."""
    if len(hosts) > 1:
        result['conflicts'].append('%s: declared on %s; a VM runs on one host' % (name, ' and '.join(hosts)))
        return
    target = hosts[0]
    others = [host for host in defined if host != target]
    if len(defined) > 1:
        result['conflicts'].append('%s: defined on %s; remove the copies that should not be there'
                                   % (name, ' and '.join(defined)))
    elif others and here == others[0]:
        state = where[here][name]
        result['moves'].append({'name': name, 'to': target, 'mode': migration_mode(state)})
    elif others:
        result['arrivals'].append({'name': name, 'from': others[0]})
    elif not defined and result['silent']:
        result['held'].append({'name': name, 'reason': '%s did not answer and may run it; not starting a second copy'
                               % ', '.join(result['silent'])})
