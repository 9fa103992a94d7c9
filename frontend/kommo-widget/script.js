/*
 * pipepay for Kommo.
 *
 * Three places: the settings window explains that setup happens on pipepay and links to its
 * claim page; the deal card (lcard) shows this deal's payment and, for account admins, sends
 * or disables its link; the Digital Pipeline action is configured by Kommo's own form from
 * manifest.json (dp.settings) and calls pipepay's webhook, so it needs no code here.
 *
 * The card talks to pipepay with Kommo's one-time token ($authorizedAjax: a JWT Kommo signs
 * for this integration, naming the account and user), exchanged for a pipepay widget token
 * that lives minutes; no pipepay credential is ever in the browser.
 *
 * Kommo's listing rules, kept here on purpose: dependencies only through define([...]);
 * no eval, no synchronous XHR, no API calls in loops; nothing is written to the global
 * APP; every node and style lives under one root element with the pipepay-widget class.
 */
define(['jquery'], function ($) {
  'use strict';

  // Placeholders: `pipepay kommo widget pack` writes the deployment's PIPEPAY_PUBLIC_URL
  // and --support-email over them (and over "support" in manifest.json) when it packs.
  var PIPEPAY_PUBLIC_URL = 'https://pipepay.example';
  var SUPPORT_EMAIL = 'support@pipepay.example';

  var CLAIM_URL = PIPEPAY_PUBLIC_URL + '/kommo/claim';
  var API_URL = PIPEPAY_PUBLIC_URL + '/api/v1/widget';
  var HELP_URL = PIPEPAY_PUBLIC_URL + '/help';
  var ROOT = 'pipepay-widget';

  var CustomWidget = function () {
    var self = this;
    var $root = null;

    function text(key) {
      var section = self.i18n('pipepay');
      return section && typeof section[key] === 'string' ? section[key] : '';
    }

    function link(part, href, label, newTab) {
      var attributes = { 'class': ROOT + '__' + part, href: href, text: label };
      if (newTab) {
        attributes.target = '_blank';
        attributes.rel = 'noopener noreferrer';
      }
      return $('<a>', attributes);
    }

    // Kommo serves the widget's own files under settings.path. The stylesheet goes inside
    // the root rather than into <head>, so it leaves with the root and touches nothing else.
    function stylesheet() {
      var settings = self.get_settings() || {};
      if (!settings.path) {
        return null;
      }
      var version = encodeURIComponent(String(settings.version || ''));
      return $('<link>', { rel: 'stylesheet', type: 'text/css', href: settings.path + '/style.css?v=' + version });
    }

    function build() {
      var $node = $('<div>', { 'class': ROOT });
      var $css = stylesheet();
      if ($css) {
        $node.append($css);
      }
      $node.append(
        $('<h3>', { 'class': ROOT + '__title', text: text('title') }),
        $('<p>', { 'class': ROOT + '__text', text: text('intro') }),
        $('<p>', { 'class': ROOT + '__text', text: text('setup') }),
        $('<p>', { 'class': ROOT + '__action' }).append(link('open', CLAIM_URL, text('open'), true)),
        $('<p>', { 'class': ROOT + '__help' }).append(
          document.createTextNode(text('help') + ' '),
          link('link', HELP_URL, text('help_link'), true),
          document.createTextNode(' \u00b7 '),
          link('link', 'mailto:' + SUPPORT_EMAIL, SUPPORT_EMAIL, false)
        )
      );
      return $node;
    }

    // The settings window markup is Kommo's; fall back outwards if a class is renamed.
    function container($modal) {
      var $block = $modal.find('.widget_settings_block').first();
      if ($block.length) {
        return $block;
      }
      var $body = $modal.find('.modal-body').first();
      return $body.length ? $body : $modal;
    }

    function remove() {
      if ($root) {
        $root.remove();
        $root = null;
      }
    }


    // ---- The deal card -------------------------------------------------------------------

    var session = null; // { token, expires_at, can_act }
    var $card = null;

    function cardText(key) {
      var section = self.i18n('card');
      return section && typeof section[key] === 'string' ? section[key] : '';
    }

    function area() {
      var system = self.system ? self.system() : null;
      return system && system.area ? String(system.area) : '';
    }

    // Read only: the open card's lead id, from Kommo's page data.
    function leadId() {
      var data = window.AMOCRM && window.AMOCRM.data;
      var card = data && data.current_card;
      var id = card ? parseInt(card.id, 10) : NaN;
      return id > 0 ? id : null;
    }

    function fresh() {
      return session && session.expires_at * 1000 > Date.now() + 30000;
    }

    // A widget token from Kommo's one-time token; reused until it is about to expire.
    function startSession() {
      if (fresh()) {
        return $.Deferred().resolve(session).promise();
      }
      return self.$authorizedAjax({ url: API_URL + '/session', method: 'POST', dataType: 'json' })
        .then(function (answer) {
          session = answer;
          return answer;
        });
    }

    function call(method, path) {
      return startSession().then(function (current) {
        return $.ajax({
          url: API_URL + path,
          method: method,
          dataType: 'json',
          headers: { 'X-Widget-Token': current.token }
        });
      });
    }

    function formatDate(ms) {
      if (!ms) {
        return '';
      }
      try {
        return new Date(ms).toLocaleString();
      } catch (e) {
        return String(ms);
      }
    }

    function row(label, value) {
      return $('<div>', { 'class': ROOT + '__row' }).append(
        $('<span>', { 'class': ROOT + '__label', text: label + ': ' }),
        $('<span>', { 'class': ROOT + '__value', text: value })
      );
    }

    function button(part, label, onClick) {
      return $('<button>', { type: 'button', 'class': ROOT + '__button ' + ROOT + '__' + part, text: label })
        .on('click', onClick);
    }

    function say(message, kind) {
      if (!$card) {
        return;
      }
      $card.find('.' + ROOT + '__message').remove();
      $card.append($('<p>', { 'class': ROOT + '__message ' + ROOT + '__message--' + (kind || 'info'), text: message }));
    }

    function copy(link, $button) {
      var done = function () {
        $button.text(cardText('copied'));
      };
      if (navigator.clipboard && navigator.clipboard.writeText) {
        navigator.clipboard.writeText(link).then(done, function () {
          say(link);
        });
      } else {
        say(link);
      }
    }

    function act(path) {
      var id = leadId();
      if (!id) {
        return;
      }
      $card.find('button.' + ROOT + '__button').prop('disabled', true);
      call('POST', '/leads/' + id + '/' + path).then(function () {
        say(cardText('queued'), 'ok');
      }, function () {
        say(cardText('error'), 'error');
      }).always(function () {
        $card.find('button.' + ROOT + '__button').prop('disabled', false);
      });
    }

    function show(payment) {
      var $body = $('<div>', { 'class': ROOT + '__body', 'data-state': payment.state });
      var states = { none: 'none', sent: 'sent', paid: 'paid', not_accepted: 'not_accepted' };
      $body.append($('<p>', { 'class': ROOT + '__state', text: cardText(states[payment.state] || 'none') }));
      if (payment.state === 'sent' || payment.state === 'paid') {
        $body.append(row(cardText('amount'), payment.amount + ' ' + payment.currency));
        $body.append(row(cardText('date'), formatDate(payment.state === 'paid' ? payment.paid_at : payment.sent_at)));
      }
      if (payment.state === 'paid') {
        $body.append(row(cardText('method'), payment.method || ''));
        $body.append(row(cardText('reference'), payment.reference || ''));
      }
      if (payment.state === 'not_accepted' && payment.reason) {
        $body.append($('<p>', { 'class': ROOT + '__reason', text: payment.reason }));
      }
      if (payment.state === 'sent' && payment.link) {
        var $link = $('<input>', { type: 'text', readonly: 'readonly', 'class': ROOT + '__link', value: payment.link });
        var $copy = button('copy', cardText('copy'), function () {
          copy(payment.link, $copy);
        });
        $body.append($('<div>', { 'class': ROOT + '__row' }).append($link, $copy));
      }
      if (payment.can_act && payment.state !== 'paid') {
        var $actions = $('<div>', { 'class': ROOT + '__actions' });
        $actions.append(button('send', cardText(payment.state === 'sent' ? 'resend' : 'send'), function () {
          act('send');
        }));
        if (payment.state === 'sent') {
          $actions.append(button('disable', cardText('disable'), function () {
            act('disable');
          }));
        }
        $body.append($actions);
      }
      $card.find('.' + ROOT + '__body').remove();
      $card.find('.' + ROOT + '__message').remove();
      $card.append($body);
    }

    function load() {
      var id = leadId();
      if (!$card || !id) {
        return;
      }
      call('GET', '/leads/' + id).then(show, function (failure) {
        var status = failure && failure.status;
        say(cardText(status === 404 ? 'not_connected' : 'error'), 'error');
      });
    }

    function renderCard() {
      if (area() !== 'lcard' || !leadId()) {
        return;
      }
      $card = $('<div>', { 'class': ROOT + ' ' + ROOT + '--card' });
      var $css = stylesheet();
      if ($css) {
        $card.append($css);
      }
      $card.append(
        $('<h3>', { 'class': ROOT + '__title', text: cardText('title') }),
        $('<p>', { 'class': ROOT + '__message', text: cardText('loading') })
      );
      self.render_template({
        caption: { class_name: ROOT + '__caption' },
        body: '',
        render: '<div class="' + ROOT + '__slot"></div>'
      });
      var $slot = $('.' + ROOT + '__slot').last();
      ($slot.length ? $slot : $('body')).append($card);
      load();
    }

    function removeCard() {
      if ($card) {
        $card.remove();
        $card = null;
      }
    }

    this.callbacks = {
      // Kommo skips init and bind_actions unless render returns true.
      render: function () {
        renderCard();
        return true;
      },
      init: function () {
        return true;
      },
      bind_actions: function () {
        return true;
      },
      settings: function ($modal) {
        remove();
        $root = build();
        container($($modal)).append($root);
        return true;
      },
      // Nothing is saved in Kommo; returning true lets Kommo mark the widget as set up.
      onSave: function () {
        return true;
      },
      destroy: function () {
        remove();
        removeCard();
        return true;
      },
      // The Digital Pipeline action's form is Kommo's own, from manifest.json's dp.settings.
      dpSettings: function () {
        return true;
      }
    };
    return this;
  };

  return CustomWidget;
});
