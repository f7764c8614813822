# -*- coding: utf-8 -*-
# Copyright: Ferry Developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Desired vs current state of one VM, for the ferry.hypervisor.vm module.

The manager first plans the engine calls that take the VM from its current
state to the desired one, then (outside check mode) makes them. The plan
alone decides ``changed`` and the predicted ``after`` of the diff, so check
mode reports what a real run would do.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

from collections import namedtuple

from ansible_collections.ferry.hypervisor.plugins.module_utils.engine import EngineError

DEFINITION_KEYS = ('name', 'vcpus', 'memory', 'kernel', 'initrd', 'cmdline', 'cpu', 'tags')
REQUIRED_TO_CREATE = ('vcpus', 'memory', 'kernel')
# Sized when the VM process starts: only a stopped VM can take new values.
FIXED_WHILE_ACTIVE = ('vcpus', 'memory')
APPLIED_AT_ONCE = ('tags',)  # read by checkpoint policies and placement, not by the running guest
ACTIVE = ('running', 'paused')

Step = namedtuple('Step', ['action', 'args'])


class VmManager(object):
    def __init__(self, engine, params, check_mode=False):
        self.engine = engine
        self.params = params
        self.name = params['name']
        self.check_mode = check_mode
        self.done = []
        self.warnings = [engine.warning] if engine.warning else []

    # --- desired state ---

    def desired_definition(self, current):
        """The definition to store, validated by the engine; None for state=absent."""
        if self.params['state'] == 'absent':
            return None
        values = definition_of(current) if current else {'name': self.name}
        for key in DEFINITION_KEYS[1:]:
            if self.params.get(key) is not None:
                values[key] = self.params[key]
        # An empty initrd removes it: None already means "keep the stored one".
        if values.get('initrd') == '':
            values['initrd'] = None
        for key in ('cpu', 'tags'):
            if values.get(key) is None:
                values.pop(key, None)  # the engine's default, and no key an older engine refuses
        if current is None:
            self.check_creatable(values)
        return self.engine.validate(values)

    def check_creatable(self, values):
        missing = [key for key in REQUIRED_TO_CREATE if values.get(key) is None]
        if missing:
            raise EngineError('%s: required to create VM %r, which is not defined on this host '
                              '(missing: %s)' % (missing[0], self.name, ', '.join(missing)))

    # --- plan ---

    def plan(self, current, desired):
        state = current['state'] if current else 'absent'
        target = self.params['state']
        if target == 'absent':
            return self.steps_to_absent(state)
        stored = definition_of(current) if current else None
        changed_keys = [key for key in DEFINITION_KEYS if stored is None or stored[key] != desired.get(key)]
        if state in ACTIVE and target != 'stopped':
            self.check_changes_while_active(current, desired, changed_keys)
        define = [Step('define', (desired,))] if changed_keys else []
        return self.steps_to(state, target, define)

    def steps_to_absent(self, state):
        steps = []
        if state in ACTIVE:
            steps.append(Step('poweroff', (self.name, self.params['stop_timeout'])))
        if state != 'absent':
            steps.append(Step('undefine', (self.name,)))
        return steps

    def steps_to(self, state, target, define):
        name = self.name
        if target == 'present':
            return define
        if target == 'stopped':
            if state == 'paused':
                # A paused guest cannot react to the power button.
                return [Step('resume', (name,)), Step('stop', (name, self.params['stop_timeout']))] + define
            if state == 'running':
                return [Step('stop', (name, self.params['stop_timeout']))] + define
            return define
        start = [] if state in ACTIVE else [Step('start', (name,))]
        if target == 'running':
            return define + start + ([Step('resume', (name,))] if state == 'paused' else [])
        return define + start + ([] if state == 'paused' else [Step('pause', (name,))])

    def check_changes_while_active(self, current, desired, changed_keys):
        fixed = [key for key in FIXED_WHILE_ACTIVE if key in changed_keys]
        if fixed:
            changes = ', '.join('%s %s -> %s' % (key, current[key], desired[key]) for key in fixed)
            raise EngineError('%s: cannot change while VM %r is %s (%s); '
                              'stop it first (state=stopped), then apply the new definition'
                              % (fixed[0], self.name, current['state'], changes))
        later = [key for key in changed_keys if key not in APPLIED_AT_ONCE]
        if later:
            self.warnings.append('VM %r is %s: the new %s take%s effect when it next starts'
                                 % (self.name, current['state'], ', '.join(later),
                                    '' if len(later) > 1 else 's'))

    # --- apply ---

    def apply(self):
        check_stop_timeout(self.params['stop_timeout'])
        current = self.engine.get(self.name)
        desired = self.desired_definition(current)
        steps = self.plan(current, desired)
        if self.check_mode:
            after = predict(current, desired, self.params['state'])
        else:
            for step in steps:
                getattr(self.engine, step.action)(*step.args)
                self.done.append(step)
            after = self.engine.get(self.name) if steps else current
        return {
            'changed': bool(steps),
            'vm': after or absent(self.name),
            'diff': {'before': facts(current, self.name), 'after': facts(after, self.name)},
            'warnings': self.warnings,
        }


def check_stop_timeout(value):
    """Refused before anything is asked of the engine, so check mode refuses it too."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float('inf'):
        raise EngineError('stop_timeout: %r is not allowed, expected a number of seconds, 0 or more' % (value,))


def definition_of(vm):
    """The definition part of an engine's VM record; an engine older than tags has none."""
    values = dict((key, vm.get(key)) for key in DEFINITION_KEYS)
    values['tags'] = values['tags'] or []
    return values


def absent(name):
    return {'name': name, 'state': 'absent'}


def facts(vm, name):
    """What the diff compares: the definition and the run state."""
    if vm is None:
        return absent(name)
    return dict(definition_of(vm), state=vm['state'])


def predict(current, desired, target):
    """The VM as a real run would leave it, without asking the engine to change anything."""
    if target == 'absent':
        return None
    state = current['state'] if current else 'stopped'
    if target == 'stopped' and state != 'crashed' or target in ACTIVE:
        state = target
    vm = dict(current or {}, **desired)
    vm['state'] = state
    if state != 'crashed':
        # Only a crashed VM says why it stopped; a new VM has the keys a real run returns.
        vm['error'] = None
    if state not in ACTIVE:
        vm['pid'] = None
    return vm
