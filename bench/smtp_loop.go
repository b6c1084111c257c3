// bench/sendmail.py's reference loop in Go (the language of the worker etrans replaces),
// standard library only: N goroutines, each with one reused net/smtp connection, send the
// pre-built messages of a file, then print {"rate": msg/s, "cpu_us": CPU us per message}.
//
// The file holds, per message: the envelope sender, the recipients joined by ",", the size of
// the data in bytes, each on its own line, then the data itself.
//
// Usage: smtp_loop HOST:PORT MESSAGES_FILE CONNECTIONS
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/smtp"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

type message struct {
	from string
	to   []string
	data []byte
}

func readMessages(path string) ([]message, error) {
	file, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer file.Close()
	reader := bufio.NewReader(file)
	var messages []message
	for {
		from, err := reader.ReadString('\n')
		if err == io.EOF {
			return messages, nil
		}
		if err != nil {
			return nil, err
		}
		to, err := reader.ReadString('\n')
		if err != nil {
			return nil, err
		}
		sizeLine, err := reader.ReadString('\n')
		if err != nil {
			return nil, err
		}
		size, err := strconv.Atoi(strings.TrimSpace(sizeLine))
		if err != nil {
			return nil, err
		}
		data := make([]byte, size)
		if _, err := io.ReadFull(reader, data); err != nil {
			return nil, err
		}
		messages = append(messages, message{strings.TrimSpace(from),
			strings.Split(strings.TrimSpace(to), ","), data})
	}
}

func send(client *smtp.Client, m message) error {
	if err := client.Mail(m.from); err != nil {
		return err
	}
	for _, rcpt := range m.to {
		if err := client.Rcpt(rcpt); err != nil {
			return err
		}
	}
	writer, err := client.Data()
	if err != nil {
		return err
	}
	if _, err := writer.Write(m.data); err != nil {
		return err
	}
	return writer.Close()
}

func cpuSeconds() float64 {
	var usage syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &usage)
	return float64(usage.Utime.Nano()+usage.Stime.Nano()) / 1e9
}

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: smtp_loop HOST:PORT MESSAGES_FILE CONNECTIONS")
		os.Exit(2)
	}
	address, path := os.Args[1], os.Args[2]
	connections, err := strconv.Atoi(os.Args[3])
	if err != nil {
		panic(err)
	}
	messages, err := readMessages(path)
	if err != nil {
		panic(err)
	}
	clients := make([]*smtp.Client, connections)
	for i := range clients {
		if clients[i], err = smtp.Dial(address); err != nil {
			panic(err)
		}
		if err = clients[i].Hello("bench.example"); err != nil {
			panic(err)
		}
	}
	var wait sync.WaitGroup
	failures := make(chan error, connections)
	started, cpuStart := time.Now(), cpuSeconds()
	for i, client := range clients {
		wait.Add(1)
		go func(i int, client *smtp.Client) {
			defer wait.Done()
			for j := i; j < len(messages); j += connections {
				if err := send(client, messages[j]); err != nil {
					failures <- err
					return
				}
			}
		}(i, client)
	}
	wait.Wait()
	elapsed, cpu := time.Since(started).Seconds(), cpuSeconds()-cpuStart
	close(failures)
	for err := range failures {
		panic(err)
	}
	for _, client := range clients {
		client.Quit()
	}
	out, _ := json.Marshal(map[string]float64{
		"rate":   float64(len(messages)) / elapsed,
		"cpu_us": cpu * 1e6 / float64(len(messages)),
	})
	fmt.Println(string(out))
}
