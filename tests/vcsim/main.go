// vcsim for reimage's tests: govmomi's vSphere simulator (the `simulator`
// package from Debian's golang-github-vmware-govmomi-dev) behind a tiny
// main. Built by tests/vcsim/build.sh.
//
// It serves the vim25 SOAP API on /sdk over TLS with a certificate for
// 127.0.0.1 it makes at start, signed by a CA it makes too (as vCenter's
// VMCA signs its own), writes the CA certificate's PEM to -cert, and prints
// one line when it listens:
//
//	vcsim URL THUMBPRINT
//
// URL is https://127.0.0.1:PORT/sdk; THUMBPRINT the server certificate's
// SHA-256 in govc's -thumbprint form (colon-separated upper-case hex).
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"flag"
	"fmt"
	"log"
	"math/big"
	"net"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vmware/govmomi/simulator"
)

func main() {
	model := flag.String("model", "vpx", "vpx (vCenter) or esx (standalone ESXi host)")
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	user := flag.String("user", "user", "the one account's name")
	passFile := flag.String("password-file", "", "file whose first line is the account's password (default: pass)")
	certOut := flag.String("cert", "", "write the server certificate's PEM here")
	delay := flag.String("delay", "", "method delays, e.g. CloneVM_Task=3000,CopyVirtualDisk_Task=3000 (ms)")
	trace := flag.String("trace", "", "append the SOAP traffic to this file")
	flag.Parse()

	var m *simulator.Model
	switch *model {
	case "vpx":
		m = simulator.VPX()
	case "esx":
		m = simulator.ESX()
	default:
		log.Fatalf("-model must be vpx or esx, not %q", *model)
	}
	if *delay != "" {
		m.DelayConfig.MethodDelay = map[string]int{}
		for _, kv := range strings.Split(*delay, ",") {
			k, v, ok := strings.Cut(kv, "=")
			ms, err := strconv.Atoi(v)
			if !ok || err != nil {
				log.Fatalf("-delay: %q is not METHOD=MILLISECONDS", kv)
			}
			m.DelayConfig.MethodDelay[k] = ms
		}
	}
	if *trace != "" {
		f, err := os.OpenFile(*trace, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			log.Fatal(err)
		}
		simulator.Trace = true
		simulator.TraceFile = f
	}
	pass := "pass"
	if *passFile != "" {
		b, err := os.ReadFile(*passFile)
		if err != nil {
			log.Fatal(err)
		}
		pass = strings.SplitN(string(b), "\n", 2)[0]
	}

	if err := m.Create(); err != nil {
		log.Fatal(err)
	}
	defer m.Remove()

	cert, der, caDer := certificates()
	if *certOut != "" {
		pemText := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDer})
		if err := os.WriteFile(*certOut, pemText, 0o644); err != nil {
			log.Fatal(err)
		}
	}
	m.Service.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	m.Service.Listen = &url.URL{Host: *listen, User: url.UserPassword(*user, pass)}
	s := m.Service.NewServer()
	defer s.Close()

	sum := sha256.Sum256(der)
	hex := make([]string, len(sum))
	for i, b := range sum {
		hex[i] = fmt.Sprintf("%02X", b)
	}
	u := *s.URL
	u.User = nil
	fmt.Printf("vcsim %s %s\n", u.String(), strings.Join(hex, ":"))

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
}

// certificates makes a CA and a server certificate for 127.0.0.1 and
// localhost signed by it, valid for a day: the server's chain, the server
// certificate's DER and the CA certificate's DER.
func certificates() (tls.Certificate, []byte, []byte) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		log.Fatal(err)
	}
	caTmpl := x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "vcsim test CA", Organization: []string{"vcsim for reimage tests"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDer, err := x509.CreateCertificate(rand.Reader, &caTmpl, &caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		log.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDer)
	if err != nil {
		log.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		log.Fatal(err)
	}
	tmpl := x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano() + 1),
		Subject:               pkix.Name{CommonName: "127.0.0.1", Organization: []string{"vcsim for reimage tests"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		log.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der, caDer}, PrivateKey: key}, der, caDer
}
