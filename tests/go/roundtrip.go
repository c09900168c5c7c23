// roundtrip decodes each line of stdin into the Go llm-proxy's eventbus.Event with Go's own
// encoding/json, and writes it back encoded by Go: one JSON line out per line in.
// A line Go cannot decode is answered with {"error": "..."}.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"time"
)

// Event is the Go llm-proxy's eventbus.Event, field for field.
type Event struct {
	LogID           int64
	RequestID       string
	Method          string
	Path            string
	Status          int
	Duration        time.Duration
	ResponseHeaders http.Header
	ResponseBody    []byte
	RequestBody     []byte
}

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 64<<20)
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	for in.Scan() {
		var evt Event
		if err := json.Unmarshal(in.Bytes(), &evt); err != nil {
			msg, _ := json.Marshal(map[string]string{"error": err.Error()})
			fmt.Fprintln(out, string(msg))
			continue
		}
		data, err := json.Marshal(evt)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Fprintln(out, string(data))
	}
}
