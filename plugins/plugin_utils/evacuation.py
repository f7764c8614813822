# -*- coding: utf-8 -*-
# Copyright: Ferry Developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The evacuation planner: where the VMs of the hosts to drain go, in which waves, and what
keeps a plan from applying.

``facts`` maps every hypervisor to ``{'host': <host_info host>, 'vms': <vm_info vms>}``, or to
None when it was not read. Inputs are checked once, by the filters (plugins/filter/evacuation.py);
the functions here trust them. The plan is a plain dict (the plan file an operator reviews), see
docs/evacuation.md.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import heapq

from ansible_collections.ferry.hypervisor.plugins.plugin_utils.placement import migration_mode

VERSION = 1
DEFAULTS = {
    'memory_headroom_mib': 256,
    'vcpu_ratio': 4.0,
    'group_prefix': 'group:',
    'pin_tag': 'pinned',
    'ignore_tag': 'evacuate-ignore',
    'parallel': 4,
    'per_host': 1,
    'per_group': 1,
}


def group_of(vm, prefix):
    """The VM's anti-affinity group (its tag with the prefix, without it), or None."""
    for tag in vm.get('tags') or ():
        if tag.startswith(prefix):
            return tag[len(prefix):]
    return None


def answering(facts):
    """The hosts that were read, and the sorted names of those that were not."""
    read = dict((host, fact) for host, fact in facts.items() if fact is not None)
    return read, sorted(host for host in facts if host not in read)


def hosts_by_vm(read):
    """VM name -> the hosts (sorted) that define a VM of that name."""
    where = {}
    for host in sorted(read):
        for vm in read[host]['vms']:
            where.setdefault(vm['name'], []).append(host)
    return where


class Target(object):
    """A host the plan may move VMs onto, and what it has left as the plan fills it.

    Free memory is the lesser of what Linux says is available and what the running VMs have
    not committed: a VM that has not touched all its memory yet still owns it."""

    def __init__(self, name, fact, options):
        host = fact['host']
        self.name = name
        self.free = min(host['memory_free_mib'], host['memory_total_mib'] - host['committed_memory_mib'])
        self.memory_left = self.free - options['memory_headroom_mib']
        self.vcpus = host['committed_vcpus']
        self.vcpus_max = int(host['cpus'] * options['vcpu_ratio'])
        self.groups = set(group_of(vm, options['group_prefix']) for vm in fact['vms']) - set([None])

    def vcpus_left(self):
        return self.vcpus_max - self.vcpus

    def has_room(self, move):
        return move['memory_mib'] <= self.memory_left and move['vcpus'] <= self.vcpus_left()

    def fits(self, move):
        return self.has_room(move) and move['group'] not in self.groups

    def take(self, move):
        self.memory_left -= move['memory_mib']
        self.vcpus += move['vcpus']
        if move['group'] is not None:
            self.groups.add(move['group'])

    def key(self):
        """Heap order: the most memory left first, then the most vCPUs, then the name (unique,
        so the Target itself is never compared)."""
        return (-self.memory_left, -self.vcpus_left(), self.name, self)

    def summary(self, options):
        return {'memory_free_mib_before': self.free,
                'memory_free_mib_after': self.memory_left + options['memory_headroom_mib'],
                'vcpus_after': self.vcpus, 'vcpus_max': self.vcpus_max}


def targets_of(read, drain, options):
    """Every host read, not to be drained and not marked drained, as a Target by name."""
    return dict((host, Target(host, fact, options)) for host, fact in read.items()
                if host not in drain and not fact['host'].get('drained'))


def move_of(vm, host, prefix):
    """A VM on a host to drain, as the move the plan may make of it (``to`` and ``wave`` follow)."""
    return {'vm': vm['name'], 'from': host, 'to': None, 'mode': migration_mode(vm['state']),
            'memory_mib': vm['memory'], 'vcpus': vm['vcpus'], 'group': group_of(vm, prefix), 'wave': None}


def plan(facts, drain, options):
    """The evacuation of the hosts in ``drain`` onto every other host read and not drained.
    ``options`` holds every key of DEFAULTS."""
    read, silent = answering(facts)
    drain = sorted(set(drain))
    targets = targets_of(read, drain, options)
    result = {'version': VERSION, 'drain': drain, 'options': dict(options), 'moves': [], 'waves': 0,
              'ignored': [], 'pinned': [], 'unplaced': [], 'silent': silent}
    candidates = _sources(result, read, drain, options)
    _place(result, candidates, targets, hosts_by_vm(read))
    result['waves'] = schedule(result['moves'], options)
    result['targets'] = dict((name, target.summary(options)) for name, target in sorted(targets.items()))
    result['blockers'] = blockers(result)
    result['ok'] = not result['blockers']
    return result


def _sources(result, read, drain, options):
    """The VMs to move, biggest first; ignored and pinned ones go to their lists instead."""
    candidates = []
    for host in drain:
        for vm in read.get(host, {'vms': []})['vms']:
            tags = vm.get('tags') or ()
            if options['ignore_tag'] in tags:
                result['ignored'].append({'vm': vm['name'], 'host': host})
            elif options['pin_tag'] in tags:
                result['pinned'].append({'vm': vm['name'], 'host': host})
            else:
                candidates.append(move_of(vm, host, options['group_prefix']))
    # Biggest first, so the large VMs find room before the small ones fragment it.
    candidates.sort(key=lambda move: (-move['memory_mib'], -move['vcpus'], move['vm'], move['from']))
    return candidates


def _place(result, candidates, targets, where):
    heap = [target.key() for target in targets.values()]
    heapq.heapify(heap)
    for move in candidates:
        others = [host for host in where[move['vm']] if host != move['from']]
        target = None if others else _roomiest(heap, move)
        if target is None:
            reason = ('also defined on %s; a name on two hosts cannot be told apart' % ', '.join(others)
                      if others else shortfall(move, targets.values()))
            result['unplaced'].append({'vm': move['vm'], 'host': move['from'], 'memory_mib': move['memory_mib'],
                                       'vcpus': move['vcpus'], 'reason': reason})
            continue
        target.take(move)
        heapq.heappush(heap, target.key())
        move['to'] = target.name
        result['moves'].append(move)


def _roomiest(heap, move):
    """Pop the target with the most memory left that takes ``move`` (taken off the heap; the
    caller pushes it back filled), or None. Targets passed over go back unchanged."""
    passed, found = [], None
    while heap and -heap[0][0] >= move['memory_mib']:
        entry = heapq.heappop(heap)
        if entry[-1].fits(move):
            found = entry[-1]
            break
        passed.append(entry)
    for entry in passed:
        heapq.heappush(heap, entry)
    return found


def shortfall(move, targets):
    """Why no target takes ``move``, naming what it needs against the most any target has."""
    targets = list(targets)
    if not targets:
        return 'no target: every other host is to be drained, drained, or did not answer'
    if any(target.has_room(move) for target in targets):
        return 'its group %s is on every target with room for it' % move['group']
    memory = max(0, max(target.memory_left for target in targets))
    vcpus = max(0, max(target.vcpus_left() for target in targets))
    short = []
    if memory < move['memory_mib']:
        short.append('%d MiB' % memory)
    if vcpus < move['vcpus']:
        short.append(_vcpus(vcpus))
    left = ' and '.join(short) or '%d MiB and %s, but not on one host' % (memory, _vcpus(vcpus))
    return 'needs %d MiB and %s; the most any target has left is %s' % (move['memory_mib'], _vcpus(move['vcpus']), left)


def _vcpus(count):
    return '%d vCPU%s' % (count, '' if count == 1 else 's')


def blockers(result):
    lines = ['%s: to be drained and did not answer' % host for host in result['drain'] if host in result['silent']]
    lines += ['%s on %s is pinned (tag %s)' % (entry['vm'], entry['host'], result['options']['pin_tag'])
              for entry in result['pinned']]
    lines += ['%s on %s: %s' % (entry['vm'], entry['host'], entry['reason']) for entry in result['unplaced']]
    return lines


# --- waves ---

def _budget_keys(move):
    keys = [('parallel',), ('from', move['from']), ('to', move['to'])]
    if move['group'] is not None:
        keys.append(('group', move['group']))
    return keys


def schedule(moves, options):
    """Give each move (in order) the first wave (from 1) where it keeps every budget; return
    the number of waves. A wave holds at most ``parallel`` moves, ``per_host`` out of any
    source and into any target, ``per_group`` of one group."""
    limits = {'parallel': options['parallel'], 'from': options['per_host'], 'to': options['per_host'],
              'group': options['per_group']}
    waves = []  # per wave: budget key -> moves in it
    earliest = {}  # budget key -> the first wave not yet full for it (waves only fill up)
    for move in moves:
        keys = _budget_keys(move)
        wave = max(earliest.get(key, 0) for key in keys)
        while wave < len(waves) and any(waves[wave].get(key, 0) >= limits[key[0]] for key in keys):
            wave += 1
        if wave == len(waves):
            waves.append({})
        for key in keys:
            waves[wave][key] = waves[wave].get(key, 0) + 1
            first = earliest.get(key, 0)
            while first < len(waves) and waves[first].get(key, 0) >= limits[key[0]]:
                first += 1
            earliest[key] = first
        move['wave'] = wave + 1
    moves.sort(key=lambda move: (move['wave'], move['from'], move['vm']))
    return len(waves)


# --- applying a plan later ---

def _progress(move, hosts, silent):
    """'todo', 'done', or the line saying why ``move`` no longer applies; ``hosts`` are the
    answering hosts that define its VM now."""
    if hosts == [move['from']]:
        return 'todo'
    if hosts == [move['to']]:
        return 'done'
    if not hosts:
        return '%s: %s' % (move['vm'], _missing(move, silent))
    return '%s: on %s, the plan moves it from %s to %s' % (move['vm'], ' and '.join(hosts), move['from'], move['to'])


def _missing(move, silent):
    quiet = [host for host in (move['from'], move['to']) if host in silent]
    if quiet:
        return 'on no host that answered; %s did not answer' % ' and '.join(quiet)
    return 'gone (no host that answered has it)'


def drift(plan, facts):
    """The lines saying how the fleet no longer matches ``plan``; [] while it still applies.
    A move already made is not drift."""
    read, silent = answering(facts)
    where = hosts_by_vm(read)
    lines = ['%s: to be drained and did not answer' % host for host in plan['drain'] if host in silent]
    todo = []
    for move in plan['moves']:
        state = _progress(move, where.get(move['vm'], []), silent)
        if state == 'todo':
            todo.append(move)
        elif state != 'done':
            lines.append(state)
    lines += _new_on_sources(plan, read)
    lines += _targets_now(plan, todo, read, silent)
    return lines


def _new_on_sources(plan, read):
    """VMs on a host to drain that the plan does not account for (defined since)."""
    known = set(entry['vm'] for kind in ('moves', 'ignored', 'pinned', 'unplaced') for entry in plan[kind])
    return ['%s: %s is there and not in the plan' % (host, vm['name'])
            for host in plan['drain'] if host in read for vm in read[host]['vms'] if vm['name'] not in known]


def _targets_now(plan, todo, read, silent):
    """Whether each target still takes what the plan has left to send it."""
    lines, sent = [], {}
    for move in todo:
        sent.setdefault(move['to'], []).append(move)
    for name, moves in sorted(sent.items()):
        if name in silent or name not in read:
            lines.append('%s: a target of the plan did not answer' % name)
        elif read[name]['host'].get('drained'):
            lines.append('%s: a target of the plan is drained now' % name)
        else:
            lines += _room_now(Target(name, read[name], plan['options']), moves)
    return lines


def _room_now(target, moves):
    memory = sum(move['memory_mib'] for move in moves)
    vcpus = sum(move['vcpus'] for move in moves)
    lines = ['%s: %s of group %s is there now; the plan sends it there too' % (target.name, move['vm'], move['group'])
             for move in moves if move['group'] in target.groups]
    if memory > target.memory_left or vcpus > target.vcpus_left():
        lines.append('%s: the plan sends it %d MiB and %s; it has %d MiB and %s left'
                     % (target.name, memory, _vcpus(vcpus), max(0, target.memory_left), _vcpus(max(0, target.vcpus_left()))))
    return lines


def _current_vms(read, where):
    """VM name -> its vm_info entry, for the names on exactly one answering host."""
    return dict((vm['name'], vm) for host, fact in read.items() for vm in fact['vms'] if len(where[vm['name']]) == 1)


def remaining(plan, facts):
    """The plan's moves not made yet (the VM still on its ``from``), each with its mode for the
    VM's state now (a VM stopped since the plan moves cold). Check ``drift`` first."""
    read, silent = answering(facts)
    where = hosts_by_vm(read)
    vms = _current_vms(read, where)
    return [dict(move, mode=migration_mode(vms[move['vm']]['state'])) for move in plan['moves']
            if _progress(move, where.get(move['vm'], []), silent) == 'todo']


def return_plan(plan, facts, origins=None):
    """The moves back to where ``plan`` took each VM from, for every VM still where it went,
    in waves by the plan's budgets. ``origins`` limits them to VMs of these hosts. A VM not
    brought back is listed in ``left`` with the reason."""
    read, silent = answering(facts)
    where = hosts_by_vm(read)
    vms = _current_vms(read, where)
    moves, left = [], []
    for move in plan['moves']:
        if origins is not None and move['from'] not in origins:
            continue
        back = dict(move, **{'from': move['to'], 'to': move['from']})
        reason = _why_not_back(back, where.get(move['vm'], []), read, silent)
        if reason:
            left.append({'vm': move['vm'], 'host': ', '.join(where.get(move['vm'], [])) or None, 'reason': reason})
        else:
            vm = vms[move['vm']]
            back.update(mode=migration_mode(vm['state']), memory_mib=vm['memory'], vcpus=vm['vcpus'])
            moves.append(back)
    waves = schedule(moves, plan['options'])
    return {'version': VERSION, 'moves': moves, 'waves': waves, 'left': left}


def _why_not_back(back, hosts, read, silent):
    if back['to'] in silent or back['to'] not in read:
        return 'its origin %s did not answer' % back['to']
    if read[back['to']]['host'].get('drained'):
        return 'its origin %s is still drained' % back['to']
    if hosts == [back['to']]:
        return 'on its origin %s' % back['to']
    if not hosts:
        return _missing(back, silent)
    if hosts != [back['from']]:
        return 'on %s, the plan moved it to %s' % (' and '.join(hosts), back['from'])
    return None


# --- the plan as text ---

def table(plan):
    """The plan as lines of text: one per move, then what stays and why."""
    rows = [('VM', 'FROM', 'TO', 'MODE', 'MEMORY', 'WAVE')]
    rows += [(move['vm'], move['from'], move['to'], move['mode'], '%d MiB' % move['memory_mib'], str(move['wave']))
             for move in plan['moves']]
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = ['  '.join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    lines += ['ignored: %s on %s' % (entry['vm'], entry['host']) for entry in plan['ignored']]
    lines += ['pinned: %s on %s (blocks the plan)' % (entry['vm'], entry['host']) for entry in plan['pinned']]
    lines += ['unplaced: %s on %s: %s' % (entry['vm'], entry['host'], entry['reason']) for entry in plan['unplaced']]
    lines += ['silent: %s' % host for host in plan['silent']]
    verdict = 'ok' if plan['ok'] else 'not ok: %d blocker(s)' % len(plan['blockers'])
    sources = ', '.join(plan['drain']) or 'no host'
    lines.append('%d move(s) in %d wave(s) from %s; %s' % (len(plan['moves']), plan['waves'], sources, verdict))
    return lines
