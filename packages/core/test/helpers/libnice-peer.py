#!/usr/bin/python3
"""An independent ICE-TCP peer for the tests: libnice (RFC 5245/6544, ice-tcp only) driven through stdin/stdout.

Usage: libnice-peer.py controlling|controlled [local address, default 127.0.0.1]
Protocol, one JSON object per line:
  out {"local": {"ufrag", "pwd", "candidates": [SDP candidate lines]}}   once gathering is done
  in  {"ufrag", "pwd", "candidates": [candidate lines, "a=candidate:" optional]}   the peer's description
  out {"selected": {"local": "ip:port tcptype", "remote": "ip:port tcptype"}}   libnice's selected pair
  out {"state": "connected" | "ready" | "failed" ...}                          component state changes
  out {"received": "<text>"}                                                    data from the peer (framed messages)
  in  {"send": "<text>"}                                                        sent as one message
  in  {"quit": true}
The agent is not reliable: every send is one RFC 4571 frame on the selected TCP connection.
"""
import ctypes
import json
import sys

import gi

gi.require_version('Nice', '0.1')
from gi.repository import GLib, Nice  # noqa: E402

role = sys.argv[1] if len(sys.argv) > 1 else 'controlled'
bind = sys.argv[2] if len(sys.argv) > 2 else '127.0.0.1'

loop = GLib.MainLoop()
ctx = loop.get_context()
agent = Nice.Agent.new(ctx, Nice.Compatibility.RFC5245)
agent.set_property('ice-tcp', True)
agent.set_property('ice-udp', False)
agent.set_property('controlling-mode', role == 'controlling')
agent.set_property('upnp', False)
address = Nice.Address.new()
address.set_from_string(bind)
agent.add_local_address(address)
stream = agent.add_stream(1)
TCP_TYPES = {
    Nice.CandidateTransport.TCP_ACTIVE: 'active',
    Nice.CandidateTransport.TCP_PASSIVE: 'passive',
    Nice.CandidateTransport.TCP_SO: 'so',
}


def emit(obj):
    sys.stdout.write(json.dumps(obj) + '\n')
    sys.stdout.flush()


def describe(c):
    return '%s:%d %s' % (c.addr.dup_string(), c.addr.get_port(), TCP_TYPES.get(c.transport, 'udp'))


def on_gathered(_agent, stream_id):
    ok, ufrag, pwd = agent.get_local_credentials(stream_id)
    lines = [agent.generate_local_candidate_sdp(c) for c in agent.get_local_candidates(stream_id, 1)]
    emit({'local': {'ufrag': ufrag, 'pwd': pwd, 'candidates': lines}})


def on_selected(_agent, _stream_id, _component, local, remote):
    emit({'selected': {'local': describe(local), 'remote': describe(remote)}})


def on_state(_agent, _stream_id, _component, state):
    emit({'state': Nice.component_state_to_string(state).lower()})


# attach_recv and the receive functions' buffers are not usable through GObject introspection: call
# nice_agent_recv_nonblocking from libnice itself (one message per call, -1 with an error when none is waiting)
libnice = ctypes.CDLL('libnice.so.10')
libnice.nice_agent_recv_nonblocking.restype = ctypes.c_ssize_t
libnice.nice_agent_recv_nonblocking.argtypes = [ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p,
                                                 ctypes.c_size_t, ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p)]
ctypes.pythonapi.PyCapsule_GetPointer.restype = ctypes.c_void_p
ctypes.pythonapi.PyCapsule_GetPointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
agent_ptr = ctypes.pythonapi.PyCapsule_GetPointer(agent.__gpointer__, None)
glib = ctypes.CDLL('libglib-2.0.so.0')
glib.g_error_free.argtypes = [ctypes.c_void_p]
recv_buf = ctypes.create_string_buffer(65536)


def poll_receive():
    for _ in range(64):
        err = ctypes.c_void_p()
        n = libnice.nice_agent_recv_nonblocking(agent_ptr, stream, 1, recv_buf, len(recv_buf), None, ctypes.byref(err))
        if err.value:
            glib.g_error_free(err)
        if n <= 0:
            break
        emit({'received': recv_buf.raw[:n].decode('utf-8', 'replace')})
    return True


def on_stdin(source, condition):
    if condition & (GLib.IO_HUP | GLib.IO_ERR):
        loop.quit()
        return False
    line = sys.stdin.readline()
    if not line:
        loop.quit()
        return False
    msg = json.loads(line)
    if msg.get('quit'):
        loop.quit()
        return False
    if 'send' in msg:
        text = msg['send']
        agent.send(stream, 1, len(text.encode()), text)
        return True
    agent.set_remote_credentials(stream, msg['ufrag'], msg['pwd'])
    cands = []
    for text in msg['candidates']:
        if not text.startswith('a=candidate:') and not text.startswith('candidate:'):
            text = 'a=candidate:' + text
        c = agent.parse_remote_candidate_sdp(stream, text)
        if c is not None:
            cands.append(c)
    agent.set_remote_candidates(stream, 1, cands)
    return True


agent.connect('candidate-gathering-done', on_gathered)
agent.connect('new-selected-pair-full', on_selected)
agent.connect('component-state-changed', on_state)
GLib.timeout_add(20, poll_receive)
GLib.io_add_watch(sys.stdin.fileno(), GLib.PRIORITY_DEFAULT, GLib.IO_IN | GLib.IO_HUP | GLib.IO_ERR, on_stdin)
agent.gather_candidates(stream)
GLib.timeout_add_seconds(60, loop.quit)  # never outlive a test by much
loop.run()
