// Package agentv1 is the generated Go code of the stratovirt guest agent
// API (proto package stratovirt.agent.v1, agent.proto beside this file):
// the Health and Agent ttrpc services and their messages. It holds no
// logic; regenerate it with `make proto`.
package agentv1
