// COMPAT_SECURITY (compat/security.py) for the sarama agent: TLS verified against the CA file and
// SASL. sarama 1.22 leaves the SCRAM exchange to the application (Config.Net.SASL.
// SCRAMClientGeneratorFunc); scramClient below is one written against Go's standard library (RFC 5802).
package main

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io/ioutil"
	"os"
	"strconv"
	"strings"

	"github.com/Shopify/sarama"
)

type security struct {
	Protocol, Mechanism, Username, Password, CA string
}

// secure applies the process's COMPAT_SECURITY to a config; a setting it cannot use is fatal.
func secure(c *sarama.Config) {
	text := os.Getenv("COMPAT_SECURITY")
	if text == "" {
		return
	}
	var s security
	if err := json.Unmarshal([]byte(text), &s); err != nil || s.Protocol != "SASL_SSL" {
		fmt.Fprintf(os.Stderr, "unusable COMPAT_SECURITY %q\n", text)
		os.Exit(2)
	}
	pem, err := ioutil.ReadFile(s.CA)
	roots := x509.NewCertPool()
	if err != nil || !roots.AppendCertsFromPEM(pem) {
		fmt.Fprintf(os.Stderr, "no CA certificate in %s\n", s.CA)
		os.Exit(2)
	}
	c.Net.TLS.Enable, c.Net.TLS.Config = true, &tls.Config{RootCAs: roots} // the host name is checked too
	c.Net.SASL.Enable, c.Net.SASL.User, c.Net.SASL.Password = true, s.Username, s.Password
	c.Net.SASL.Mechanism = sarama.SASLMechanism(s.Mechanism)
	switch s.Mechanism {
	case sarama.SASLTypeSCRAMSHA512:
		c.Net.SASL.SCRAMClientGeneratorFunc = func() sarama.SCRAMClient { return &scramClient{hash: sha512.New} }
	case sarama.SASLTypeSCRAMSHA256:
		c.Net.SASL.SCRAMClientGeneratorFunc = func() sarama.SCRAMClient { return &scramClient{hash: sha256.New} }
	}
}

// scramClient is the client side of a SCRAM exchange: client-first, client-final, then the
// server's signature is checked, so a broker that does not know the password is refused.
type scramClient struct {
	hash                 func() hash.Hash
	user, password       string
	header, nonce, first string // gs2 header, client nonce, client-first-message-bare
	serverSignature      []byte
	step                 int
}

func (s *scramClient) mac(key []byte, text string) []byte {
	m := hmac.New(s.hash, key)
	m.Write([]byte(text))
	return m.Sum(nil)
}

// salted is PBKDF2 with HMAC and the key length of the hash: one block, as SCRAM asks.
func (s *scramClient) salted(salt []byte, iterations int) []byte {
	u := s.mac([]byte(s.password), string(append(append([]byte{}, salt...), 0, 0, 0, 1)))
	out := append([]byte{}, u...)
	for i := 1; i < iterations; i++ {
		u = s.mac([]byte(s.password), string(u))
		for j := range out {
			out[j] ^= u[j]
		}
	}
	return out
}

func (s *scramClient) Begin(user, password, authzID string) error {
	raw := make([]byte, 18)
	if _, err := rand.Read(raw); err != nil {
		return err
	}
	escape := strings.NewReplacer("=", "=3D", ",", "=2C")
	s.user, s.password, s.nonce = escape.Replace(user), password, base64.RawStdEncoding.EncodeToString(raw)
	s.header = "n,,"
	if authzID != "" {
		s.header = "n,a=" + escape.Replace(authzID) + ","
	}
	s.first, s.step = "n="+s.user+",r="+s.nonce, 0
	return nil
}

func attributes(message string) map[string]string {
	out := map[string]string{}
	for _, part := range strings.Split(message, ",") {
		if len(part) > 2 && part[1] == '=' {
			out[part[:1]] = part[2:]
		}
	}
	return out
}

func (s *scramClient) Step(challenge string) (string, error) {
	s.step++
	switch s.step {
	case 1:
		return s.header + s.first, nil
	case 2:
		server := attributes(challenge)
		salt, err := base64.StdEncoding.DecodeString(server["s"])
		iterations, convErr := strconv.Atoi(server["i"])
		if err != nil || convErr != nil || !strings.HasPrefix(server["r"], s.nonce) {
			return "", fmt.Errorf("bad SCRAM server-first message %q", challenge)
		}
		salted := s.salted(salt, iterations)
		clientKey := s.mac(salted, "Client Key")
		h := s.hash()
		h.Write(clientKey)
		final := "c=" + base64.StdEncoding.EncodeToString([]byte(s.header)) + ",r=" + server["r"]
		auth := s.first + "," + challenge + "," + final
		proof := s.mac(h.Sum(nil), auth)
		for i := range proof {
			proof[i] ^= clientKey[i]
		}
		s.serverSignature = s.mac(s.mac(salted, "Server Key"), auth)
		return final + ",p=" + base64.StdEncoding.EncodeToString(proof), nil
	default:
		server := attributes(challenge)
		if server["e"] != "" {
			return "", errors.New("SCRAM: the server refused: " + server["e"])
		}
		got, err := base64.StdEncoding.DecodeString(server["v"])
		if err != nil || !hmac.Equal(got, s.serverSignature) {
			return "", errors.New("SCRAM: the server's signature is wrong")
		}
		return "", nil
	}
}

func (s *scramClient) Done() bool { return s.step >= 3 }
