package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"
)

// MaxJSONSize bounds a -config file; StratoVirt's largest real files are a
// few KiB.
const MaxJSONSize = 1 << 20

// pendingSections are keys of StratoVirt's JSON file for devices this
// build does not have yet. A key is only reported as "not supported yet"
// while VMConfig has no field with that JSON name; once a device adds its
// field (for example Drives with `json:"drive"`), the key is decoded into
// it by decodeGeneric.
var pendingSections = []string{"drive", "net", "console", "vsock", "iothread", "balloon", "rng"}

// LoadJSONFile reads StratoVirt's -config file and applies it to c; see
// DecodeJSON.
func LoadJSONFile(path string, c *VMConfig) error {
	f, err := os.Open(path)
	if err != nil {
		return &Error{Option: "-config", Msg: fmt.Sprintf("config file %q: %v", path, unwrapPath(err))}
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxJSONSize+1))
	if err != nil {
		return &Error{Option: "-config", Msg: fmt.Sprintf("read config file %q: %v", path, err)}
	}
	if len(data) > MaxJSONSize {
		return &Error{Option: "-config", Msg: fmt.Sprintf("config file %q is larger than %d bytes", path, MaxJSONSize)}
	}
	if err := DecodeJSON(data, c); err != nil {
		return &Error{Option: "-config", Msg: fmt.Sprintf("config file %q: %v", path, err)}
	}
	return nil
}

// DecodeJSON applies a StratoVirt JSON configuration to c, on top of what
// c already holds (normally Default()).
//
// Keys: "boot-source" {kernel_image_path, boot_args, initrd_fs_path},
// "machine-config" {type, vcpu_count, mem_size, mem_path, mem_share,
// dump_guest_core}, "serial" {stdio}, and the device sections as VMConfig
// gains them. vcpu_count and mem_size may be numbers or strings; mem_size
// uses the -m syntax (bare number = bytes, "512M", "1G"). "mem-share" and
// "mem-path" are accepted as spellings of mem_share and mem_path (the
// seed document writes them so; StratoVirt's code uses underscores). Any
// other key, at any level, is an error naming it; so is a key given twice.
// Limits are checked later by Validate.
//
// Merging with the command line (StratoVirt's rule: "If both methods are
// used, the command line configuration mode is used"): the file is applied
// first and the command-line options afterwards. A scalar option (-name,
// -machine's keys, -smp, -m, -mem-path, -kernel, -initrd, -serial)
// overrides the matching key; -append replaces boot_args entirely. List
// options (-drive, -netdev, -chardev, -iothread) are appended after the
// file's list entries, so an id given in both places is a duplicate and
// Validate rejects it.
func DecodeJSON(data []byte, c *VMConfig) error {
	top, err := objectKeys("", data)
	if err != nil {
		return err
	}
	for _, kv := range top {
		var err error
		switch kv.key {
		case "boot-source":
			err = decodeBoot(kv.val, &c.Boot)
		case "machine-config":
			err = decodeMachine(kv.val, &c.Machine)
		case "serial":
			err = decodeSerial(kv.val, &c.Serial)
		default:
			err = decodeGeneric(kv.key, kv.val, c)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

type keyValue struct {
	key string
	val json.RawMessage
}

// objectKeys decodes one JSON object into its members in order,
// rejecting anything else, duplicate keys and trailing data. where names
// the object in errors ("" for the top level).
func objectKeys(where string, data []byte) ([]keyValue, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	name := where
	if name == "" {
		name = "the configuration"
	}
	tok, err := dec.Token()
	if err != nil {
		return nil, fmt.Errorf("%s: %v", name, jsonErr(err))
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, fmt.Errorf("%s: must be a JSON object", name)
	}
	var out []keyValue
	seen := make(map[string]bool)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("%s: %v", name, jsonErr(err))
		}
		key, _ := tok.(string)
		var val json.RawMessage
		if err := dec.Decode(&val); err != nil {
			return nil, fmt.Errorf("%s: %v", qualify(where, key), jsonErr(err))
		}
		if seen[key] {
			return nil, fmt.Errorf("%s: key given more than once", qualify(where, key))
		}
		seen[key] = true
		out = append(out, keyValue{key, val})
	}
	if _, err := dec.Token(); err != nil {
		return nil, fmt.Errorf("%s: %v", name, jsonErr(err))
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%s: unexpected data after the JSON object", name)
	}
	return out, nil
}

func qualify(where, key string) string {
	if where == "" {
		return strconv.Quote(key)
	}
	return where + "." + strconv.Quote(key)
}

// jsonErr turns decoder errors into one short line.
func jsonErr(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return errors.New("unexpected end of JSON input")
	}
	return err
}

func unknownKey(where, key string) error {
	return fmt.Errorf("%s: unknown key", qualify(where, key))
}

func decodeString(where, key string, raw json.RawMessage, dst *string) error {
	if err := json.Unmarshal(raw, dst); err != nil {
		return fmt.Errorf("%s: want a string", qualify(where, key))
	}
	return nil
}

func decodeBool(where, key string, raw json.RawMessage, dst *bool) error {
	if err := json.Unmarshal(raw, dst); err != nil {
		return fmt.Errorf("%s: want true or false", qualify(where, key))
	}
	return nil
}

// numberOrString returns the text of a JSON number or string value.
func numberOrString(where, key string, raw json.RawMessage) (string, error) {
	var v any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&v); err == nil {
		switch x := v.(type) {
		case json.Number:
			return x.String(), nil
		case string:
			return x, nil
		}
	}
	return "", fmt.Errorf("%s: want a number or a string", qualify(where, key))
}

func decodeBoot(raw json.RawMessage, b *Boot) error {
	const where = `"boot-source"`
	kvs, err := objectKeys(where, raw)
	if err != nil {
		return err
	}
	for _, kv := range kvs {
		switch kv.key {
		case "kernel_image_path":
			err = decodeString(where, kv.key, kv.val, &b.Kernel)
		case "boot_args":
			err = decodeString(where, kv.key, kv.val, &b.Cmdline)
		case "initrd_fs_path":
			err = decodeString(where, kv.key, kv.val, &b.Initrd)
		default:
			err = unknownKey(where, kv.key)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func decodeMachine(raw json.RawMessage, m *Machine) error {
	const where = `"machine-config"`
	kvs, err := objectKeys(where, raw)
	if err != nil {
		return err
	}
	seen := make(map[string]string)
	for _, kv := range kvs {
		canon := strings.ReplaceAll(kv.key, "-", "_")
		if canon != "mem_share" && canon != "mem_path" {
			canon = kv.key
		}
		if prev, dup := seen[canon]; dup {
			return fmt.Errorf("%s: same setting as %q", qualify(where, kv.key), prev)
		}
		seen[canon] = kv.key
		switch canon {
		case "type":
			err = decodeString(where, kv.key, kv.val, &m.Type)
			if err == nil && IsMicroVM(m.Type) {
				m.Type = MachineTypeMicroVM
			}
		case "vcpu_count":
			var s string
			if s, err = numberOrString(where, kv.key, kv.val); err == nil {
				n, perr := strconv.ParseInt(s, 10, 64)
				switch {
				case perr == nil && n >= math.MinInt32 && n <= math.MaxInt32:
					m.VCPUs = int(n)
				case errors.Is(perr, strconv.ErrRange) || perr == nil:
					err = VCPUsRangeError(s)
				default:
					err = fmt.Errorf("%s: unable to parse %q as a CPU count", qualify(where, kv.key), s)
				}
			}
		case "mem_size":
			var s string
			if s, err = numberOrString(where, kv.key, kv.val); err == nil {
				var size uint64
				if size, err = ParseMemSize(s); err != nil {
					err = fmt.Errorf("%s: %v", qualify(where, kv.key), err)
				} else {
					m.MemSize = size
				}
			}
		case "mem_path":
			err = decodeString(where, kv.key, kv.val, &m.MemPath)
		case "mem_share":
			err = decodeBool(where, kv.key, kv.val, &m.MemShare)
		case "dump_guest_core":
			err = decodeBool(where, kv.key, kv.val, &m.DumpGuestCore)
		default:
			err = unknownKey(where, kv.key)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func decodeSerial(raw json.RawMessage, s *Serial) error {
	const where = `"serial"`
	kvs, err := objectKeys(where, raw)
	if err != nil {
		return err
	}
	for _, kv := range kvs {
		switch kv.key {
		case "stdio":
			err = decodeBool(where, kv.key, kv.val, &s.Stdio)
		default:
			err = unknownKey(where, kv.key)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// decodeGeneric decodes a top-level key into the VMConfig field with that
// JSON name: a list section is appended to, an object section replaces the
// field. Every object's keys are checked against the element type's JSON
// names first, so unknown keys are errors even for types with their own
// UnmarshalJSON.
func decodeGeneric(key string, raw json.RawMessage, c *VMConfig) error {
	fv, ok := fieldByJSONName(reflect.ValueOf(c).Elem(), key)
	if !ok {
		for _, p := range pendingSections {
			if p == key {
				return fmt.Errorf("%s: not supported yet", strconv.Quote(key))
			}
		}
		return unknownKey("", key)
	}
	where := strconv.Quote(key)
	switch fv.Kind() {
	case reflect.Slice:
		var items []json.RawMessage
		if err := json.Unmarshal(raw, &items); err != nil {
			return fmt.Errorf("%s: want a list of objects", where)
		}
		elem := fv.Type().Elem()
		for i, item := range items {
			at := fmt.Sprintf("%s[%d]", where, i)
			v := reflect.New(elem)
			if err := decodeStrict(at, item, v); err != nil {
				return err
			}
			fv.Set(reflect.Append(fv, v.Elem()))
		}
	case reflect.Pointer:
		v := reflect.New(fv.Type().Elem())
		if err := decodeStrict(where, raw, v); err != nil {
			return err
		}
		fv.Set(v)
	default:
		v := reflect.New(fv.Type())
		if err := decodeStrict(where, raw, v); err != nil {
			return err
		}
		fv.Set(v.Elem())
	}
	return nil
}

// decodeStrict decodes one JSON object into ptr after checking its keys.
func decodeStrict(where string, raw json.RawMessage, ptr reflect.Value) error {
	kvs, err := objectKeys(where, raw)
	if err != nil {
		return err
	}
	allowed := jsonNames(ptr.Type().Elem())
	for _, kv := range kvs {
		if !allowed[kv.key] {
			names := make([]string, 0, len(allowed))
			for n := range allowed {
				names = append(names, n)
			}
			sort.Strings(names)
			return fmt.Errorf("%s: unknown key (known: %s)", qualify(where, kv.key), strings.Join(names, ", "))
		}
	}
	if err := json.Unmarshal(raw, ptr.Interface()); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return fmt.Errorf("%s: want a JSON %s, not %s", qualify(where, te.Field), te.Type.Kind(), te.Value)
		}
		return fmt.Errorf("%s: %v", where, err)
	}
	return nil
}

// fieldByJSONName finds the struct field of v whose JSON tag name is key.
func fieldByJSONName(v reflect.Value, key string) (reflect.Value, bool) {
	t := v.Type()
	for i := range t.NumField() {
		if name, ok := jsonName(t.Field(i)); ok && name == key {
			return v.Field(i), true
		}
	}
	return reflect.Value{}, false
}

// jsonNames returns the JSON member names of struct type t.
func jsonNames(t reflect.Type) map[string]bool {
	out := make(map[string]bool)
	if t.Kind() != reflect.Struct {
		return out
	}
	for i := range t.NumField() {
		if name, ok := jsonName(t.Field(i)); ok {
			out[name] = true
		}
	}
	return out
}

func jsonName(f reflect.StructField) (string, bool) {
	if !f.IsExported() {
		return "", false
	}
	tag := f.Tag.Get("json")
	if tag == "-" {
		return "", false
	}
	name, _, _ := strings.Cut(tag, ",")
	if name == "" {
		name = f.Name
	}
	return name, true
}

// ParseMemSize converts StratoVirt's memory size syntax to bytes: digits,
// optionally followed by one unit letter, M or m (MiB) or G or g (GiB); no
// letter means bytes. It is shared by -m and the JSON mem_size.
func ParseMemSize(s string) (uint64, error) {
	num, mult := s, uint64(1)
	if n := len(s); n > 0 {
		switch s[n-1] {
		case 'M', 'm':
			num, mult = s[:n-1], 1<<20
		case 'G', 'g':
			num, mult = s[:n-1], 1<<30
		}
	}
	n, err := strconv.ParseUint(num, 10, 64)
	if errors.Is(err, strconv.ErrRange) || (err == nil && n > math.MaxUint64/mult) {
		return 0, fmt.Errorf("integer overflow occurred while parsing '%s'", s)
	}
	if err != nil {
		return 0, fmt.Errorf("unable to parse '%s' as a memory size (N bytes, NM or NG)", s)
	}
	return n * mult, nil
}
