// Package agentv1 is the generated Go code of the stratovirt guest agent
// API (proto package stratovirt.agent.v1, agent.proto beside this file):
// the Health and Agent ttrpc services and their messages, plus the few
// constants host and guest share outside the messages (devices.go). It
// holds no logic; regenerate the generated files with `make proto`.
package agentv1
