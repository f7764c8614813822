# -*- coding: utf-8 -*-
# Copyright: Ferry Developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The evacuation filters: evacuation_plan, evacuation_drift, evacuation_remaining,
evacuation_table and return_plan (each documented in its own .yml here). Every input is checked
here, once per kind, so that bad input is one line naming what is wrong and the planner
(plugins/plugin_utils/evacuation.py) can trust what it gets."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

from ansible.errors import AnsibleFilterError

from ansible_collections.ferry.hypervisor.plugins.plugin_utils import evacuation

HOST_NUMBERS = ('cpus', 'memory_total_mib', 'memory_free_mib', 'committed_memory_mib', 'committed_vcpus')
MOVE_KEYS = ('vm', 'from', 'to', 'mode', 'memory_mib', 'vcpus', 'group', 'wave')
PLAN_LISTS = ('drain', 'moves', 'ignored', 'pinned', 'unplaced', 'silent', 'blockers')
BUDGETS = ('parallel', 'per_host', 'per_group')
TAGS = ('group_prefix', 'pin_tag', 'ignore_tag')


def _fail(where, text):
    raise AnsibleFilterError('%s: %s' % (where, text))


def _is_int(value, least):
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def _check_options(where, options, label='options'):
    """The options with the defaults filled in; each value of the kind its default is."""
    if options is None:
        options = {}
    if not isinstance(options, dict):
        _fail(where, '%s must be a dict, got %s' % (label, type(options).__name__))
    unknown = sorted(set(options) - set(evacuation.DEFAULTS))
    if unknown:
        _fail(where, '%s: unknown option %s; known: %s' % (label, unknown[0], ', '.join(sorted(evacuation.DEFAULTS))))
    merged = dict(evacuation.DEFAULTS, **options)
    for name in BUDGETS:
        if not _is_int(merged[name], 1):
            _fail(where, '%s: %s must be an integer of 1 or more, got %r' % (label, name, merged[name]))
    if not _is_int(merged['memory_headroom_mib'], 0):
        _fail(where, '%s: memory_headroom_mib must be an integer of 0 or more, got %r'
              % (label, merged['memory_headroom_mib']))
    ratio = merged['vcpu_ratio']
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not ratio > 0:
        _fail(where, '%s: vcpu_ratio must be a number above 0, got %r' % (label, ratio))
    for name in TAGS:
        if not isinstance(merged[name], str) or not merged[name]:
            _fail(where, '%s: %s must be a non-empty string, got %r' % (label, name, merged[name]))
    return merged


def _check_facts(where, facts, prefix):
    """facts: host -> None (not read) or {'host': host_info's host, 'vms': vm_info's vms}."""
    if not isinstance(facts, dict):
        _fail(where, 'facts must be a dict by host, got %s' % type(facts).__name__)
    for host, fact in facts.items():
        if fact is None:
            continue
        if not isinstance(fact, dict) or not isinstance(fact.get('host'), dict) or not isinstance(fact.get('vms'), list):
            _fail(where, 'facts[%s] must be null or a dict with host (host_info) and vms (vm_info)' % host)
        _check_host(where, host, fact['host'])
        for vm in fact['vms']:
            _check_vm(where, host, vm, prefix)


def _check_host(where, host, facts):
    for key in HOST_NUMBERS:
        if not _is_int(facts.get(key), 0):
            _fail(where, 'facts[%s].host.%s must be an integer of 0 or more, got %r' % (host, key, facts.get(key)))
    if not isinstance(facts.get('drained'), (dict, type(None))):
        _fail(where, 'facts[%s].host.drained must be a dict or null, got %r' % (host, facts.get('drained')))


def _check_vm(where, host, vm, prefix):
    if not isinstance(vm, dict) or not isinstance(vm.get('name'), str) or not isinstance(vm.get('state'), str):
        _fail(where, 'facts[%s].vms: each VM must be a dict with a name and a state, got %r' % (host, vm))
    for key in ('memory', 'vcpus'):
        if not _is_int(vm.get(key), 1):
            _fail(where, 'facts[%s]: VM %s: %s must be an integer of 1 or more, got %r'
                  % (host, vm['name'], key, vm.get(key)))
    tags = vm.get('tags') or []
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        _fail(where, 'facts[%s]: VM %s: tags must be a list of strings, got %r' % (host, vm['name'], tags))
    groups = [tag for tag in tags if tag.startswith(prefix)]
    if len(groups) > 1:
        _fail(where, 'facts[%s]: VM %s has %d group tags (%s); a VM is in one anti-affinity group'
              % (host, vm['name'], len(groups), ', '.join(groups)))


def _check_drain(where, drain, facts):
    if not isinstance(drain, list) or not all(isinstance(host, str) for host in drain):
        _fail(where, 'drain must be a list of inventory names, got %r' % (drain,))
    unknown = [host for host in drain if host not in facts]
    if unknown:
        _fail(where, 'drain: %s has no entry in facts (give every hypervisor, null when not read)' % unknown[0])


def _check_plan(where, plan):
    """A plan as evacuation_plan makes it (a plan file read back)."""
    if not isinstance(plan, dict) or plan.get('version') != evacuation.VERSION:
        _fail(where, 'expected an evacuation plan of version %d, got %s'
              % (evacuation.VERSION, 'version %r' % plan.get('version') if isinstance(plan, dict) else type(plan).__name__))
    for key in PLAN_LISTS:
        if not isinstance(plan.get(key), list):
            _fail(where, 'the plan has no %s list' % key)
    if not _is_int(plan.get('waves'), 0) or not isinstance(plan.get('ok'), bool):
        _fail(where, 'the plan has no waves count or no ok')
    for move in plan['moves']:
        if not isinstance(move, dict) or not all(key in move for key in MOVE_KEYS):
            _fail(where, 'the plan\'s moves must each have %s, got %r' % (', '.join(MOVE_KEYS), move))
    return _check_options(where, plan.get('options'), 'the plan\'s options')


def _checked(where, plan, facts):
    """The plan and facts of the filters that apply a plan, both checked."""
    options = _check_plan(where, plan)
    _check_facts(where, facts, options['group_prefix'])
    return dict(plan, options=options)


def evacuation_plan(facts, drain, options=None):
    where = 'evacuation_plan'
    options = _check_options(where, options)
    _check_facts(where, facts, options['group_prefix'])
    _check_drain(where, drain, facts)
    return evacuation.plan(facts, drain, options)


def evacuation_drift(plan, facts):
    return evacuation.drift(_checked('evacuation_drift', plan, facts), facts)


def evacuation_remaining(plan, facts):
    return evacuation.remaining(_checked('evacuation_remaining', plan, facts), facts)


def evacuation_table(plan):
    _check_plan('evacuation_table', plan)
    return evacuation.table(plan)


def return_plan(plan, facts, origins=None):
    where = 'return_plan'
    plan = _checked(where, plan, facts)
    if origins is not None and (not isinstance(origins, list) or not all(isinstance(host, str) for host in origins)):
        _fail(where, 'origins must be a list of inventory names, got %r' % (origins,))
    return evacuation.return_plan(plan, facts, origins)


class FilterModule(object):
    def filters(self):
        return {
            'evacuation_plan': evacuation_plan,
            'evacuation_drift': evacuation_drift,
            'evacuation_remaining': evacuation_remaining,
            'evacuation_table': evacuation_table,
            'return_plan': return_plan,
        }
